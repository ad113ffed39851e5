"""Outgoing webhooks: per-site subscriptions to domain events, signed, retried, durable.

A site's admin subscribes a URL to events (``POST /v1/webhooks``); each event a
subscription wants is queued in storage (it survives a restart and is shared by every
process), POSTed as JSON signed with HMAC-SHA256 (``X-Kefu-Signature: t=...,v1=...``),
retried with exponential back-off and jitter, in order per conversation, and after
``max_attempts`` kept as a dead letter that can be resent. The message path only appends
to a memory buffer. Settings: ``[webhooks]`` (:mod:`~kefu.plugins.webhooks.settings`);
the receiving side: :func:`kefu.core.signing.verify`; docs/integrations.md.
"""

from __future__ import annotations

from typing import Any

from kefu.hooks import hookimpl
from kefu.plugins.webhooks.api import make_endpoints
from kefu.plugins.webhooks.service import Webhooks
from kefu.plugins.webhooks.settings import WebhooksSettings

STATE = "webhooks"


def service_of(kernel: Any) -> Webhooks | None:
    return kernel.existing_plugin_state(STATE)


@hookimpl
def kefu_config_schema():
    return {"webhooks": WebhooksSettings}


@hookimpl
async def kefu_startup(kernel):
    if kernel.storage is not None:
        await kernel.plugin_state(STATE, Webhooks).start()


@hookimpl
async def kefu_shutdown(kernel):
    service = kernel.drop_plugin_state(STATE)
    if service is not None:
        await service.stop()


@hookimpl
def kefu_event(kernel, event):
    service = service_of(kernel)
    if service is not None:
        service.on_event(event)


@hookimpl
def kefu_rest_endpoints(kernel):
    return make_endpoints(service_of)


@hookimpl
def kefu_stats(kernel):
    service = service_of(kernel)
    return None if service is None else service.stats()

"""The gateway: the transport-independent core of live messaging.

Transports (WebSocket, long-poll, ...) are adapters: they authenticate the
client, open a :class:`~kefu.plugins.gateway.connection.Connection` through
``kernel.gateway`` (:class:`~kefu.plugins.gateway.service.Gateway`), feed it
the client's frames and write out its outbox. Frames are dispatched by ``op``
to the handlers every plugin contributes through
``kefu_transport_frame_handlers``; this plugin contributes the built-in ops
(:mod:`kefu.plugins.gateway.handlers`) the same way. docs/protocol.md is the
protocol reference.
"""

from __future__ import annotations

from kefu.hooks import hookimpl, listens_to
from kefu.plugins.gateway.handlers import make_handlers
from kefu.plugins.gateway.service import Gateway
from kefu.plugins.gateway.settings import GatewaySettings
from kefu.plugins.gateway.stats import kefu_stats  # noqa: F401  (a hook implementation)


def _gateway(kernel) -> Gateway:
    return kernel.plugin_state("gateway", Gateway)


@hookimpl
def kefu_config_schema():
    return {"gateway": GatewaySettings}


@hookimpl
def kefu_transport_frame_handlers(kernel):
    return make_handlers(_gateway(kernel))


@hookimpl
def kefu_degradation_features(kernel):
    return _gateway(kernel).degraded.features()


@hookimpl
async def kefu_startup(kernel):
    gateway = _gateway(kernel)
    await gateway.start()
    kernel.gateway = kernel.delivery = gateway


@hookimpl
async def kefu_shutdown(kernel):
    gateway = kernel.drop_plugin_state("gateway")
    if gateway is not None:
        kernel.gateway = kernel.delivery = None
        await gateway.stop()


@hookimpl
async def kefu_shutdown_requested(kernel):
    # close sockets first, so the server does not wait for them to time out
    gateway = kernel.existing_plugin_state("gateway")
    if gateway is not None:
        await gateway.close_all("shutdown")


@hookimpl
def kefu_config_changed(kernel, section, old, new):
    gateway = kernel.existing_plugin_state("gateway")
    if gateway is not None:  # processors may read their settings when they are collected
        gateway.processors = kernel.hooks.pipeline_processors()


@hookimpl
@listens_to("conversation.*")
def kefu_event(kernel, event):
    # a conversation that changed here (resolved, assigned, ...) is read again on the next send
    gateway = kernel.existing_plugin_state("gateway")
    conversation_id = event.data.get("conversation_id")
    if gateway is not None and event.type.startswith("conversation.") and conversation_id:
        gateway.forget(event.site_id, conversation_id)

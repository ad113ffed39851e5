"""Routing: who answers a waiting visitor, how fast and how fairly.

Eligibility filters (``kefu_routing_filters``) decide who *may* take a
conversation; a selector chosen by name (``[routing] policy``, registered
through ``kefu_routing_policies``) decides who *does*: ``weighted`` (default,
a score from every plugin's ``kefu_routing_weight_factors``), ``round_robin``,
``least_open`` or ``manual`` (a pool agents pick from). Conversations nobody can
take wait in a per-site line (priority, then oldest first) that drains as soon
as capacity frees. See ``docs/routing.md``.

Everything here is ``trylast``: a third party's policy, filter or factor is
collected alongside (or, for a policy name, instead of) the built-ins.
"""

from __future__ import annotations

import logging
import weakref

from kefu.hooks import hookimpl
from kefu.plugins.routing.factors import BUILTIN_FACTORS
from kefu.plugins.routing.filters import BUILTIN_FILTERS
from kefu.plugins.routing.policies import BUILTIN_POLICIES
from kefu.plugins.routing.service import RoutingService
from kefu.plugins.routing.settings import RoutingSettings

log = logging.getLogger(__name__)

#: The running service of each started kernel (a process may hold several in tests).
_SERVICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def service_of(kernel) -> RoutingService | None:
    """The routing service of a started kernel, None before start-up or without storage."""
    return _SERVICES.get(kernel)


@hookimpl
def kefu_config_schema():
    return {"routing": RoutingSettings}


@hookimpl(trylast=True)
def kefu_routing_policies():
    return dict(BUILTIN_POLICIES)


@hookimpl(trylast=True)
def kefu_routing_filters(kernel):
    return list(BUILTIN_FILTERS)


@hookimpl(trylast=True)
def kefu_routing_weight_factors(kernel):
    return list(BUILTIN_FACTORS)


@hookimpl
async def kefu_startup(kernel):
    if kernel.storage is None:
        log.warning("routing: no storage backend is enabled; conversations will not be routed")
        return
    service = RoutingService(kernel)
    _SERVICES[kernel] = service
    await service.start()


@hookimpl
async def kefu_shutdown(kernel):
    service = _SERVICES.pop(kernel, None)
    if service is not None:
        await service.stop()


@hookimpl
def kefu_config_changed(kernel, section, old, new):
    service = _SERVICES.get(kernel)
    if section == "routing" and service is not None:
        service.reconfigure(new)


@hookimpl
async def kefu_event(kernel, event):
    service = _SERVICES.get(kernel)
    if service is not None:
        await service.on_event(event)

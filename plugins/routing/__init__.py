"""Routing: who answers a waiting visitor, how fast and how fairly.

Eligibility filters (``kefu_routing_filters``) decide who *may* take a
conversation; a selector chosen by name (``[routing] policy``, registered
through ``kefu_routing_policies``) decides who *does*: ``weighted`` (default,
a score from every plugin's ``kefu_routing_weight_factors``), ``round_robin``,
``least_open`` or ``manual`` (a pool agents pick from). Conversations nobody can
take wait in a per-site line (priority, then oldest first) that drains as soon
as capacity frees. The line and the agents are indexed per skill
(:mod:`~kefu.plugins.routing.engine`), so a pass costs the events that caused it,
not the length of the line times the team. See ``docs/routing.md``.

Around the engine, the live agent workflow: presence (with automatic away after
a disconnect), capacity, accept/decline, transfer, reassignment of unanswered
conversations, resolve/reopen, manual picks and business hours, as frame ops
(:mod:`~kefu.plugins.routing.ops`) and REST endpoints
(:mod:`~kefu.plugins.routing.api`), and the replay of an agent's assignments to each
connection they open; see ``docs/protocol.md``.

Everything here is ``trylast``: a third party's policy, filter or factor is
collected alongside (or, for a policy name, instead of) the built-ins.
"""

from __future__ import annotations

import logging

from kefu.hooks import hookimpl
from kefu.plugins.routing.api import make_endpoints
from kefu.plugins.routing.factors import BUILTIN_FACTORS
from kefu.plugins.routing.filters import BUILTIN_FILTERS
from kefu.plugins.routing.ops import make_ops
from kefu.plugins.routing.policies import BUILTIN_POLICIES
from kefu.plugins.routing.service import RoutingService
from kefu.plugins.routing.settings import RoutingSettings

log = logging.getLogger(__name__)


def service_of(kernel) -> RoutingService | None:
    """The routing service of a started kernel, None before start-up or without storage."""
    return kernel.existing_plugin_state("routing")


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
    kernel.plugin_state("routing", lambda _kernel: service)
    await service.start()


@hookimpl
async def kefu_shutdown(kernel):
    service = kernel.drop_plugin_state("routing")
    if service is not None:
        await service.stop()


@hookimpl
def kefu_stats(kernel):
    service = kernel.existing_plugin_state("routing")
    if service is None:
        return None
    return {"routing_leases_held": len(service.owned_sites())}


@hookimpl
def kefu_config_changed(kernel, section, old, new):
    service = kernel.existing_plugin_state("routing")
    if section == "routing" and service is not None:
        service.reconfigure(new)


@hookimpl
async def kefu_event(kernel, event):
    service = kernel.existing_plugin_state("routing")
    if service is not None:
        await service.on_event(event)


@hookimpl
def kefu_transport_frame_handlers(kernel):
    return make_ops(lambda: kernel.existing_plugin_state("routing"))


@hookimpl
def kefu_rest_endpoints(kernel):
    return make_endpoints(service_of)


@hookimpl
def kefu_transport_connected(kernel, connection):
    service = kernel.existing_plugin_state("routing")
    if service is not None and connection.principal.kind == "agent":
        service.connected(connection.principal)  # presence, and what they hold is replayed


@hookimpl
def kefu_transport_disconnected(kernel, connection):
    service = kernel.existing_plugin_state("routing")
    if service is not None and connection.principal.kind == "agent":
        service.presence.disconnected(connection.principal)


#: Actions on a conversation only its assignee (or an admin) may take once it is assigned.
ASSIGNEE_ACTIONS = frozenset({"conversation.resolve", "conversation.transfer"})


@hookimpl(tryfirst=True)
def kefu_auth_permits(kernel, principal, action, resource):
    """Narrow the auth plugin's rules: an agent who is not an admin may not resolve or
    transfer a conversation assigned to someone else. Never grants anything."""
    if action not in ASSIGNEE_ACTIONS or principal is None or principal.kind != "agent":
        return None
    assignee = getattr(resource, "assignee_id", None)
    if assignee is not None and assignee != principal.id and not principal.is_admin:
        return False
    return None

"""Routing's REST endpoints, contributed through ``kefu_rest_endpoints`` (docs/protocol.md
lists them next to the frames that do the same; ``/v1/openapi.json`` describes them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.routing import api_models as m
from kefu.plugins.routing.notices import CLOSED, NO_AGENTS, conversation_view, queue_frame
from kefu.plugins.routing.settings import SITE_HOURS_KEY, BusinessHours, site_hours
from kefu.plugins.routing.snapshots import ONLINE


def make_endpoints(service_of: Callable[[Any], Any]) -> list[RestEndpoint]:
    """The endpoints, bound to a lookup of the kernel's routing service."""

    def service(call: Any) -> Any:
        found = service_of(call.kernel)
        if found is None:
            raise ApiError(503, "unavailable", "routing is not running (no storage)")
        return found

    def state(conversation: Any) -> m.ConversationState:
        return m.ConversationState(**conversation_view(conversation))

    async def accept(call: Any) -> m.ConversationState:
        return state(await service(call).workflow.accept(call.principal, call.params["id"]))

    async def decline(call: Any) -> m.ConversationState:
        flow = service(call).workflow
        return state(await flow.decline(call.principal, call.params["id"], call.body.reason))

    async def transfer(call: Any) -> m.ConversationState:
        body = call.body
        done = await service(call).workflow.transfer(
            call.principal,
            call.params["id"],
            agent_id=body.agent_id,
            department=body.department,
            note=body.note,
        )
        return state(done)

    async def resolve(call: Any) -> m.ConversationState:
        return state(await service(call).workflow.resolve(call.principal, call.params["id"]))

    async def reopen(call: Any) -> m.ConversationState:
        return state(await service(call).workflow.reopen(call.principal, call.params["id"]))

    async def pick(call: Any) -> m.ConversationState:
        flow = service(call).workflow
        return state(await flow.pick(call.principal, call.body.conversation_id))

    async def position(call: Any) -> m.QueuePosition:
        routing = service(call)
        conversation = await routing.workflow.load(
            call.principal, call.params["id"], "conversation.read"
        )
        found = await routing.queue_status(conversation)
        if found is None:
            return m.QueuePosition(
                conversation_id=conversation.id,
                state=conversation.state,
                position=None,
                eta_s=None,
                available=False,
                reason=None,
            )
        frame = queue_frame(*found, routing.settings.eta_step_s)
        frame.pop("op")
        return m.QueuePosition(**frame, state=conversation.state)

    async def waiting(call: Any) -> m.QueueList:
        await call.require("conversation.list", call.site_id)
        routing = service(call)
        await routing.sync(call.site_id)
        statuses = await routing.engine.status(call.site_id)
        closed = routing.closed(call.site_id)
        step = routing.settings.eta_step_s
        listed = []
        for status in statuses.values():
            frame = queue_frame(status, closed, step)
            frame.pop("op")
            listed.append(m.QueuePosition(**frame, state="queued"))
        return m.QueueList(waiting=listed)

    def presence_view(agent: Any) -> m.AgentPresence:
        return m.AgentPresence(
            id=agent.id,
            site_id=agent.site_id,
            name=agent.name,
            status=agent.status,
            capacity=agent.capacity,
            skills=list(agent.skills),
        )

    async def presence(call: Any) -> m.AgentPresence:
        body = call.body
        agent = await service(call).presence.set_status(
            call.principal, call.params["id"], body.status, body.accepting
        )
        return presence_view(agent)

    async def capacity(call: Any) -> m.AgentPresence:
        presence_ = service(call).presence
        agent = await presence_.set_capacity(call.principal, call.params["id"], call.body.capacity)
        return presence_view(agent)

    async def availability(call: Any) -> m.Availability:
        routing = service(call)
        closed = routing.closed(call.site_id)
        agents = await call.kernel.storage.list_agents(call.site_id)
        accepting = [
            a
            for a in agents
            if a.status == ONLINE and routing.stats.record(a.site_id, a.id).accepting
        ]
        available = not closed and bool(accepting)
        reason = None if available else (CLOSED if closed else NO_AGENTS)
        return m.Availability(
            open=not closed, agents_online=len(accepting), available=available, reason=reason
        )

    async def hours_view(call: Any) -> m.BusinessHoursOut:
        routing = service(call)
        site = await call.kernel.storage.get_site(call.site_id)
        own = site_hours(site.settings) if site is not None else None
        configured = routing.settings.hours_for(call.site_id)
        hours, source = (own, "site") if own else (configured, "config" if configured else "none")
        dumped = None
        if hours is not None:
            dumped = m.BusinessHoursBody(**orjson.loads(hours.model_dump_json()))
        open_now = hours is None or hours.is_open(time.time())
        return m.BusinessHoursOut(source=source, open_now=open_now, hours=dumped)

    async def get_hours(call: Any) -> m.BusinessHoursOut:
        await call.require("sites.manage", call.site_id)
        return await hours_view(call)

    async def put_hours(call: Any) -> m.BusinessHoursOut:
        body = call.body.model_dump()
        try:
            BusinessHours.model_validate(body)
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise ApiError(400, "invalid_request", problem) from None
        return await _store_hours(call, body)

    async def delete_hours(call: Any) -> m.BusinessHoursOut:
        return await _store_hours(call, None)

    async def _store_hours(call: Any, hours: dict | None) -> m.BusinessHoursOut:
        await call.require("sites.manage", call.site_id)
        storage = call.kernel.storage
        site = await storage.get_site(call.site_id)
        if site is None:
            raise ApiError(404, "not_found", "site not found")
        settings = {k: v for k, v in site.settings.items() if k != SITE_HOURS_KEY}
        if hours is not None:
            settings[SITE_HOURS_KEY] = hours
        site.settings = settings
        await storage.update_site(site)
        routing = service(call)
        await call.kernel.emit("site.business_hours_changed", call.site_id, hours=hours)
        routing.kick(call.site_id)  # opening may route the waiting, closing tells them
        return await hours_view(call)

    conversation = "/v1/conversations/{id}"
    return [
        _post(
            f"{conversation}/accept",
            "accept_conversation",
            "Accept an assigned conversation",
            accept,
            None,
            "Only its assignee; stops the answer timer (`[routing] "
            "answer_timeout_s`). Refused with `409 not_assignee` otherwise.",
        ),
        _post(
            f"{conversation}/decline",
            "decline_conversation",
            "Decline an assigned conversation",
            decline,
            m.DeclineBody,
            "It waits again and is never offered to you again.",
        ),
        _post(
            f"{conversation}/transfer",
            "transfer_conversation",
            "Transfer a conversation",
            transfer,
            m.TransferBody,
            "To an online agent of the site with a free slot (`404 "
            "unknown_agent`, `409 agent_offline`, `409 agent_full`), or to a department's "
            "queue. Its assignee or an admin.",
        ),
        _post(
            f"{conversation}/resolve",
            "resolve_conversation",
            "Resolve a conversation",
            resolve,
            None,
            "Its assignee, an admin, or its visitor. The visitor is asked for a rating.",
        ),
        _post(
            f"{conversation}/reopen",
            "reopen_conversation",
            "Reopen a resolved conversation",
            reopen,
            None,
            "It waits again; the agent who had it is preferred.",
        ),
        _post(
            "/v1/queue/pick",
            "pick_conversation",
            "Take a waiting conversation",
            pick,
            m.PickBody,
            "Every routing filter applies, capacity included (`409 "
            "nothing_to_pick`). The way to work with the `manual` policy.",
        ),
        RestEndpoint(
            "GET",
            "/v1/queue",
            "list_queue",
            "The site's waiting conversations",
            "routing",
            waiting,
            response=m.QueueList,
            errors=(503,),
        ),
        RestEndpoint(
            "GET",
            f"{conversation}/queue",
            "get_queue_position",
            "A conversation's place in the queue",
            "routing",
            position,
            response=m.QueuePosition,
            errors=(503,),
            description="For its visitor or an agent; `position` is null unless "
            "the conversation is `queued`.",
        ),
        RestEndpoint(
            "PUT",
            "/v1/agents/{id}/presence",
            "set_agent_presence",
            "Set an agent's presence",
            "routing",
            presence,
            response=m.AgentPresence,
            body=m.PresenceBody,
            errors=(503,),
            description="The agent themselves or an admin; as the `presence` frame.",
        ),
        RestEndpoint(
            "PUT",
            "/v1/agents/{id}/capacity",
            "set_agent_capacity",
            "Set an agent's capacity",
            "routing",
            capacity,
            response=m.AgentPresence,
            body=m.CapacityBody,
            errors=(503,),
            description="0 to 100 open conversations; the agent themselves or an "
            "admin. A raise lets waiting conversations in at once.",
        ),
        RestEndpoint(
            "GET",
            "/v1/availability",
            "get_availability",
            "Whether anyone can answer now",
            "routing",
            availability,
            response=m.Availability,
            errors=(503,),
            description="The widget shows the leave-a-message form when not `available`.",
        ),
        RestEndpoint(
            "GET",
            "/v1/business_hours",
            "get_business_hours",
            "The site's business hours",
            "routing",
            get_hours,
            response=m.BusinessHoursOut,
            errors=(503,),
        ),
        RestEndpoint(
            "PUT",
            "/v1/business_hours",
            "set_business_hours",
            "Set the site's business hours",
            "routing",
            put_hours,
            response=m.BusinessHoursOut,
            body=m.BusinessHoursBody,
            errors=(503,),
            description="They take precedence over `[routing.business_hours]`. "
            "A window's start comes before its end; the time zone is an IANA name.",
        ),
        RestEndpoint(
            "DELETE",
            "/v1/business_hours",
            "delete_business_hours",
            "Go back to the configured business hours",
            "routing",
            delete_hours,
            response=m.BusinessHoursOut,
            errors=(503,),
        ),
    ]


def _post(
    path: str, operation_id: str, summary: str, handler: Any, body: Any, description: str
) -> RestEndpoint:
    return RestEndpoint(
        "POST",
        path,
        operation_id,
        summary,
        "routing",
        handler,
        response=m.ConversationState,
        body=body,
        errors=(404, 409, 503),
        description=description,
    )

"""The agent workflow around routing: accept, decline, transfer, resolve, reopen, pick,
and reassignment when an assigned agent does not answer in time.

Every change is a compare-and-set on the conversation's state and assignee
(``update_conversation(if_state=..., if_assignee=...)``), so two agents, two
workers or an agent and a routing pass never both win; the loser gets a clear
``409``. Each change emits a domain event and sends frames (:mod:`notices`).
The REST endpoints (:mod:`rest`) and the frame ops (:mod:`ops`) both call this
module; refusals are :class:`kefu.core.errors.ApiError`, which the REST API turns
into an HTTP error and the gateway into an ``error`` frame.

Declining, and not answering within ``[routing] answer_timeout_s``
(:mod:`answers`), both *release* the conversation: it waits again, keeping its
place in line, and the agent is added to ``meta["declined_by"]`` so that routing
never offers it to them again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kefu.core.domain import ASSIGNED, QUEUED, RESOLVED, Conversation
from kefu.core.errors import ApiError
from kefu.core.types import Principal
from kefu.plugins.routing.answers import Answers
from kefu.plugins.routing.live import ASSIGNMENT_KEYS
from kefu.plugins.routing.snapshots import ONLINE, Claim

log = logging.getLogger(__name__)

#: Why a ``pick`` (*Take*) found nothing: the ``reason`` of its ``nothing_to_pick`` error and
#: the English message (``params`` fill it in). The console words each in the agent's language
#: (static/console/actions.js); docs/protocol.md lists them.
PICK_REFUSALS = {
    "account_gone": "your agent account is gone",
    "not_online": "you are {status}: set your status to online to take conversations",
    "full": "you are full ({open} of {capacity} open conversations)",
    "not_waiting": "this conversation is not waiting any more ({state})",
    "department_not_served": "this conversation waits for department '{department}', which you "
    "do not serve (an admin adds it to your skills)",
    "declined": "you declined this conversation",
    "routing_refused": "routing did not let you take it (a filter refused, or it was just taken)",
    "none_waiting": "no waiting conversation you may take (none in a department you serve)",
}


def changed_meanwhile() -> ApiError:
    return ApiError(409, "conflict", "the conversation changed meanwhile; read it and try again")


class Workflow:
    """Agent actions on conversations, for one kernel's routing service."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.kernel = service.kernel
        self.answers = Answers(service, self._release)

    @property
    def storage(self) -> Any:
        return self.kernel.storage

    def stop(self) -> None:
        self.answers.stop()

    # -- reading and checking ------------------------------------------------------
    async def load(self, principal: Principal, conversation_id: str, action: str) -> Conversation:
        """The caller's site's conversation, if ``action`` is permitted on it."""
        found = await self.storage.get_conversation(principal.site_id, conversation_id)
        if found is None:
            raise ApiError(404, "conversation_not_found", "no such conversation in your site")
        if not await self.kernel.hooks.permits(principal, action, found):
            who = "its assignee or an admin" if found.assignee_id else "an agent"
            raise ApiError(403, "forbidden", f"you may not {action} this conversation ({who} may)")
        return found

    async def _assigned_to_caller(
        self, principal: Principal, conversation_id: str, action: str
    ) -> Conversation:
        if principal.kind != "agent":
            raise ApiError(403, "forbidden", "only agents accept or decline conversations")
        conversation = await self.load(principal, conversation_id, action)
        if conversation.state != ASSIGNED or conversation.assignee_id != principal.id:
            raise ApiError(409, "not_assignee", "this conversation is not assigned to you")
        return conversation

    # -- accept / decline -------------------------------------------------------------
    async def accept(self, principal: Principal, conversation_id: str) -> Conversation:
        conversation = await self._assigned_to_caller(
            principal, conversation_id, "conversation.accept"
        )
        if conversation.meta.get("accepted_at"):
            return conversation
        now = time.time()
        conversation.meta = {**conversation.meta, "accepted_at": now}
        conversation.updated_at = now
        if not await self.storage.update_conversation(
            conversation, if_state=ASSIGNED, if_assignee=principal.id
        ):
            raise ApiError(409, "not_assignee", "this conversation is no longer assigned to you")
        self.answers.accepted(conversation.site_id, conversation.id)
        assigned_at = float(conversation.meta.get("assigned_at", now))
        await self.kernel.emit(
            "conversation.accepted",
            conversation.site_id,
            conversation_id=conversation.id,
            agent_id=principal.id,
            seconds=max(now - assigned_at, 0.0),
        )
        await self.service.notices.agents(conversation, "accepted", agent_id=principal.id)
        return conversation

    async def decline(
        self, principal: Principal, conversation_id: str, reason: str | None = None
    ) -> Conversation:
        conversation = await self._assigned_to_caller(
            principal, conversation_id, "conversation.decline"
        )
        released = await self._release(conversation, principal.id, "declined", note=reason)
        if released is None:
            raise ApiError(409, "not_assignee", "this conversation is no longer assigned to you")
        return released

    async def _release(
        self, conversation: Conversation, agent_id: str, why: str, note: str | None = None
    ) -> Conversation | None:
        """Back to the queue from ``agent_id``, who is never offered it again; None if it
        was not theirs any more. ``why``: ``declined`` or ``timeout``."""
        now = time.time()
        declined = list(dict.fromkeys([*conversation.meta.get("declined_by", ()), agent_id]))
        meta = {k: v for k, v in conversation.meta.items() if k not in ASSIGNMENT_KEYS}
        conversation.meta = {**meta, "declined_by": declined}
        conversation.state, conversation.assignee_id, conversation.updated_at = QUEUED, None, now
        if not await self.storage.update_conversation(
            conversation, if_state=ASSIGNED, if_assignee=agent_id
        ):
            return None
        site_id = conversation.site_id
        self.answers.disarm(site_id, conversation.id)
        event = "conversation.declined" if why == "declined" else "conversation.reassigned"
        details = {"reason": note} if note else {}
        await self.kernel.emit(
            event, site_id, conversation_id=conversation.id, agent_id=agent_id, **details
        )
        await self.service.notices.released(conversation, agent_id, why)
        await self.kernel.emit("conversation.queued", site_id, conversation_id=conversation.id)
        return conversation

    # -- transfer ---------------------------------------------------------------------
    async def transfer(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        agent_id: str | None = None,
        department: str | None = None,
        note: str | None = None,
    ) -> Conversation:
        """To an online agent of the site (who must have room), or to a department's queue."""
        if agent_id is None and department is None:
            raise ApiError(400, "missing_field", "give agent_id or department", field="agent_id")
        conversation = await self.load(principal, conversation_id, "conversation.transfer")
        if conversation.state == RESOLVED:
            raise ApiError(409, "conversation_resolved", "this conversation is resolved")
        if agent_id is not None:
            return await self._to_agent(principal, conversation, agent_id, department, note)
        return await self._to_department(principal, conversation, department, note)

    async def _to_agent(
        self,
        principal: Principal,
        conversation: Conversation,
        agent_id: str,
        department: str | None,
        note: str | None,
    ) -> Conversation:
        site_id, previous = conversation.site_id, conversation.assignee_id
        target = await self.storage.get_agent(site_id, agent_id)
        if target is None:
            raise ApiError(404, "unknown_agent", f"no agent {agent_id!r} in this site")
        if target.id == previous:
            raise ApiError(409, "already_assigned", "the conversation is already theirs")
        if target.status != ONLINE:
            raise ApiError(
                409,
                "agent_offline",
                f"agent {target.name!r} is {target.status}: transfer to an online agent "
                "or to a department",
            )
        if department is not None:
            conversation.department = department
        outcome = await self.service.source.take(conversation, target.id)
        if outcome is Claim.AGENT_FULL:
            raise ApiError(
                409, "agent_full", f"agent {target.name!r} has no free slot ({target.capacity})",
                name=target.name, capacity=target.capacity,
            )  # fmt: skip
        if outcome is Claim.AGENT_UNAVAILABLE:
            raise ApiError(
                409, "agent_offline", f"agent {target.name!r} just went offline", name=target.name
            )
        if outcome is not Claim.CLAIMED:
            raise changed_meanwhile()
        self.service.changed(site_id, conversation.id)  # the indexes count it for the target
        self.answers.disarm(site_id, conversation.id)
        await self._transferred(principal, conversation, previous, note, to_agent_id=target.id)
        self.answers.arm(conversation)
        await self.service.notices.assigned(
            conversation,
            target,
            reason="transfer",
            answer_within_s=self.answers.timeout or None,
            from_agent_id=previous,
            note=note,
        )
        self.service.kick(site_id)  # the previous agent has a free slot
        return conversation

    async def _to_department(
        self, principal: Principal, conversation: Conversation, department: str, note: str | None
    ) -> Conversation:
        site_id, state = conversation.site_id, conversation.state
        previous = conversation.assignee_id
        agents = await self.storage.list_agents(site_id)
        if not any(department in a.skills for a in agents):
            raise ApiError(
                404, "unknown_department", f"no agent of this site serves {department!r}"
            )
        meta = {k: v for k, v in conversation.meta.items() if k not in ASSIGNMENT_KEYS}
        if previous is not None:
            meta["declined_by"] = list(dict.fromkeys([*meta.get("declined_by", ()), previous]))
        conversation.meta, conversation.department = meta, department
        conversation.state, conversation.assignee_id = QUEUED, None
        conversation.updated_at = time.time()
        if not await self.storage.update_conversation(
            conversation, if_state=state, if_assignee=previous
        ):
            raise changed_meanwhile()
        self.answers.disarm(site_id, conversation.id)
        self.service.changed(site_id, conversation.id)  # read again, with its new skill
        await self._transferred(principal, conversation, previous, note, to_department=department)
        if previous is not None:
            await self.service.notices.released(conversation, previous, "transferred")
        await self.kernel.emit("conversation.queued", site_id, conversation_id=conversation.id)
        return conversation

    async def _transferred(
        self,
        principal: Principal,
        conversation: Conversation,
        previous: str | None,
        note: str | None,
        **target: Any,
    ) -> None:
        await self.kernel.emit(
            "conversation.transferred",
            conversation.site_id,
            conversation_id=conversation.id,
            from_agent_id=previous,
            by_id=principal.id,
            note=note,
            department=conversation.department,
            **target,
        )

    # -- resolve / reopen / pick ----------------------------------------------------------
    async def resolve(self, principal: Principal, conversation_id: str) -> Conversation:
        """Only its assignee or an admin (or its visitor) resolves a conversation."""
        conversation = await self.load(principal, conversation_id, "conversation.resolve")
        if conversation.state == RESOLVED:
            raise ApiError(409, "conversation_resolved", "this conversation is already resolved")
        state, assignee = conversation.state, conversation.assignee_id
        now = time.time()
        conversation.state, conversation.resolved_at, conversation.updated_at = RESOLVED, now, now
        if not await self.storage.update_conversation(
            conversation, if_state=state, if_assignee=assignee
        ):
            raise changed_meanwhile()
        by = {"kind": principal.kind, "id": principal.id}
        await self.kernel.emit(
            "conversation.resolved",
            conversation.site_id,
            conversation_id=conversation.id,
            agent_id=assignee,
            by_kind=principal.kind,
            by_id=principal.id,
        )
        frame = {"op": "resolved", "conversation_id": conversation.id, "by": by}
        await self.service.notices.visitor(conversation, frame)
        await self.service.notices.agents(conversation, "resolved", by=by)
        return conversation

    async def reopen(self, principal: Principal, conversation_id: str) -> Conversation:
        """A resolved conversation waits again; the agent who had it is preferred."""
        conversation = await self.load(principal, conversation_id, "conversation.reopen")
        if conversation.state != RESOLVED:
            raise ApiError(409, "not_resolved", "only a resolved conversation can be reopened")
        previous, now = conversation.assignee_id, time.time()
        meta = {
            k: v
            for k, v in conversation.meta.items()
            if k not in ASSIGNMENT_KEYS and k != "declined_by"
        }
        meta["queued_at"] = now
        if previous is not None:
            meta["previous_assignee"] = previous
        conversation.meta = meta
        conversation.state, conversation.assignee_id = QUEUED, None
        conversation.resolved_at, conversation.updated_at = None, now
        if not await self.storage.update_conversation(conversation, if_state=RESOLVED):
            raise changed_meanwhile()
        await self.kernel.emit(
            "conversation.reopened",
            conversation.site_id,
            conversation_id=conversation.id,
            by_id=principal.id,
            previous_agent_id=previous,
        )
        frame = {"op": "reopened", "conversation_id": conversation.id}
        await self.service.notices.visitor(conversation, frame)
        await self.service.notices.agents(conversation, "reopened", by_id=principal.id)
        await self.kernel.emit(
            "conversation.queued", conversation.site_id, conversation_id=conversation.id
        )
        return conversation

    async def pick(self, principal: Principal, conversation_id: str | None) -> Conversation:
        """The caller takes a waiting conversation (the first they may, or the one named)."""
        if principal.kind != "agent":
            raise ApiError(403, "forbidden", "only agents pick conversations")
        site_id = principal.site_id
        if not await self.kernel.hooks.permits(principal, "conversation.pick", site_id):
            raise ApiError(403, "forbidden", "you may not pick conversations")
        wanted = None
        if conversation_id is not None:
            wanted = await self.load(principal, conversation_id, "conversation.pick")
        await self.service.sync(site_id)
        assignment = await self.service.engine.pick(site_id, principal.id, conversation_id)
        if assignment is None:
            raise await self._why_not(principal, wanted)
        await self.service.announce(assignment, reason="pick")
        self.service.kick(site_id)  # positions of the others moved
        return await self.storage.get_conversation(site_id, assignment.conversation_id)

    async def _why_not(self, principal: Principal, wanted: Conversation | None) -> ApiError:
        """The real reason a pick failed, read again from storage: ``nothing_to_pick`` with a
        ``reason`` (:data:`PICK_REFUSALS`) and its ``params``, so a console can word it in the
        agent's language."""
        site_id = principal.site_id
        agent = await self.storage.get_agent(site_id, principal.id)
        reason, params = "none_waiting", {}
        if agent is None:
            reason = "account_gone"
        elif agent.status != "online":
            reason, params = "not_online", {"status": agent.status}
        else:
            mine = await self.storage.list_conversations(
                site_id, state="assigned", assignee_id=agent.id, limit=agent.capacity + 1
            )
            fresh = wanted and await self.storage.get_conversation(site_id, wanted.id)
            if len(mine) >= agent.capacity:
                reason, params = "full", {"open": len(mine), "capacity": agent.capacity}
            elif wanted is not None and (fresh is None or fresh.state != QUEUED):
                reason, params = "not_waiting", {"state": fresh.state if fresh else "gone"}
            elif wanted is not None and fresh.department and fresh.department not in agent.skills:
                reason, params = "department_not_served", {"department": fresh.department}
            elif wanted is not None and agent.id in fresh.meta.get("declined_by", ()):
                reason = "declined"
            elif wanted is not None:
                reason = "routing_refused"
        message = PICK_REFUSALS[reason].format(**params)
        return ApiError(409, "nothing_to_pick", message, reason=reason, params=params)

    async def handed(self, site_id: str, conversation_id: str, reason: str) -> None:
        """Frames and the answer timer for a conversation routing just gave to an agent."""
        conversation = await self.storage.get_conversation(site_id, conversation_id)
        if conversation is None or conversation.assignee_id is None:
            return
        agent = await self.storage.get_agent(site_id, conversation.assignee_id)
        self.answers.arm(conversation)
        await self.service.notices.assigned(
            conversation, agent, reason=reason, answer_within_s=self.answers.timeout or None
        )

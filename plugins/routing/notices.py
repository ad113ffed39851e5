"""What routing tells people: frames to visitors and agents through ``kernel.delivery``.

- The visitor (every tab, not the agents watching) gets ``queue`` (position, wait
  estimate, whether anyone can answer), ``agent_joined``, ``agent_left``,
  ``resolved`` and ``reopened``.
- The agent a conversation is given to gets ``assignment`` on each of their
  connections, which start watching the conversation; a connection that opens
  later gets one (``reason: "replay"``) for every conversation the agent holds.
- Every agent of the site gets ``conversation`` frames (``event``: ``assigned``,
  ``accepted``, ``declined``, ``reassigned``, ``transferred``, ``resolved``,
  ``reopened``) so consoles keep their lists current.

Frames go through the gateway's bus fan-out, so they reach connections held by
any worker process. Without a gateway (the plugin disabled, ``kernel.delivery`` is
None) nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from kefu.core.delivery import Delivery
from kefu.core.domain import Agent, Conversation
from kefu.plugins.routing.snapshots import QueueStatus

log = logging.getLogger(__name__)

#: Queue frames sent between two yields to the event loop.
YIELD_EVERY = 256

#: Visitor-facing reasons why nobody can answer now (the widget offers the message form).
CLOSED, NO_AGENTS = "closed", "no_agents"


#: ``meta`` keys routing frames show: when it waited, was assigned, accepted, answered.
VIEW_META = ("queued_at", "assigned_at", "accepted_at", "answered_at")


def conversation_view(c: Conversation) -> dict[str, Any]:
    """The conversation as routing frames show it (no notes, no declines)."""
    return {
        "id": c.id,
        "site_id": c.site_id,
        "visitor_id": c.visitor_id,
        "state": c.state,
        "assignee_id": c.assignee_id,
        "department": c.department,
        "priority": c.priority,
        "tags": list(c.tags),
        "last_seq": c.last_seq,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "resolved_at": c.resolved_at,
        "meta": {k: c.meta[k] for k in VIEW_META if k in c.meta},
    }


def agent_view(agent: Agent | None, agent_id: str | None = None) -> dict[str, Any] | None:
    """What a visitor may know of an agent: id and display name."""
    if agent is None:
        return {"id": agent_id, "name": None} if agent_id else None
    return {"id": agent.id, "name": agent.name}


class Notices:
    """Sends routing frames for one kernel; remembers the last queue frame per visitor."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._sent: dict[str, dict[str, tuple]] = {}  # site -> conversation -> last queue frame

    @property
    def delivery(self) -> Delivery | None:
        return self.kernel.delivery

    async def visitor(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        if self.delivery is not None:
            await self.delivery.publish_visitor(conversation, frame)

    async def agents(self, conversation: Conversation, event: str, **extra: Any) -> None:
        """A ``conversation`` frame to every agent of the site."""
        if self.delivery is None:
            return
        frame = {
            "op": "conversation",
            "event": event,
            "conversation": conversation_view(conversation),
            **extra,
        }
        await self.delivery.publish_site_agents(conversation.site_id, frame)

    async def assigned(
        self,
        conversation: Conversation,
        agent: Agent | None,
        *,
        reason: str,
        answer_within_s: float | None,
        **extra: Any,
    ) -> None:
        """Tell the agent (their connections start watching), the visitor and the site."""
        delivery = self.delivery
        if delivery is None:
            return
        agent_id = conversation.assignee_id
        frame = assignment_frame(conversation, reason, answer_within_s, **extra)
        await delivery.publish_agents(
            conversation.site_id, frame, agent_ids=[agent_id], watch=conversation.id
        )
        joined = {
            "op": "agent_joined",
            "conversation_id": conversation.id,
            "agent": agent_view(agent, agent_id),
        }
        await delivery.publish_visitor(conversation, joined)
        self.forget(conversation.site_id, conversation.id)
        await self.agents(
            conversation,
            "assigned" if reason != "transfer" else "transferred",
            agent_id=agent_id,
            **extra,
        )

    async def replay(
        self, agent_id: str, held: list[Conversation], answer_within: Any = None
    ) -> int:
        """An agent connected: an ``assignment`` frame (``reason: "replay"``) for each
        conversation they hold, so that a console that was away learns what was given to
        it meanwhile. ``answer_within(conversation)`` is the time left to answer."""
        delivery = self.delivery
        if delivery is None:
            return 0
        for conversation in held:
            within = answer_within(conversation) if answer_within is not None else None
            frame = assignment_frame(conversation, REPLAY, within)
            await delivery.publish_agents(
                conversation.site_id, frame, agent_ids=[agent_id], watch=conversation.id
            )
        return len(held)

    async def released(self, conversation: Conversation, agent_id: str, reason: str) -> None:
        """The agent gave the conversation back (declined, timed out): it waits again."""
        left = {
            "op": "agent_left",
            "conversation_id": conversation.id,
            "agent_id": agent_id,
            "reason": reason,
        }
        await self.visitor(conversation, left)
        event = "declined" if reason == "declined" else "reassigned"
        await self.agents(conversation, event, agent_id=agent_id, reason=reason)

    # -- queue position and wait ----------------------------------------------------
    def forget(self, site_id: str, conversation_id: str) -> None:
        self._sent.get(site_id, {}).pop(conversation_id, None)

    async def queue(
        self,
        site_id: str,
        statuses: dict[str, QueueStatus],
        visitors: dict[str, str],
        closed: bool,
        step_s: float,
    ) -> int:
        """Send each waiting visitor whose position, estimate or availability changed a
        ``queue`` frame; returns how many were sent. ``visitors`` maps conversation ids
        to visitor ids, ``closed`` says the site is outside business hours."""
        sent = self._sent.setdefault(site_id, {})
        for gone in set(sent) - set(statuses):
            del sent[gone]
        count = 0
        for conversation_id, status in statuses.items():
            frame = queue_frame(status, closed, step_s)
            key = (frame["position"], frame["eta_s"], frame["reason"])
            if sent.get(conversation_id) == key or conversation_id not in visitors:
                continue
            sent[conversation_id] = key
            conversation = Conversation(conversation_id, site_id, visitors[conversation_id])
            await self.visitor(conversation, frame)
            count += 1
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long line is told without stalling the loop
        return count


#: ``reason`` of the ``assignment`` frames sent again to an agent's new connection.
REPLAY = "replay"


def assignment_frame(
    conversation: Conversation, reason: str, answer_within_s: float | None, **extra: Any
) -> dict[str, Any]:
    """The ``assignment`` frame: routed, picked, transferred, or replayed on connect."""
    return {
        "op": "assignment",
        "reason": reason,
        "conversation": conversation_view(conversation),
        "answer_within_s": answer_within_s,
        **extra,
    }


def queue_frame(status: QueueStatus, closed: bool, step_s: float) -> dict[str, Any]:
    """The ``queue`` frame of one waiting conversation; ``eta_s`` is rounded up to ``step_s``."""
    available = status.eta_s is not None
    reason = None if available else (CLOSED if closed else NO_AGENTS)
    eta = None
    if available:
        eta = math.ceil(status.eta_s / step_s - 1e-9) * step_s if status.eta_s > 0 else 0
    return {
        "op": "queue",
        "conversation_id": status.conversation_id,
        "position": status.position,
        "eta_s": eta,
        "available": available,
        "reason": reason,
    }

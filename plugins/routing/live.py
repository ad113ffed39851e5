"""The storage-backed routing source: snapshots from records, claims by compare-and-set.

A claim (:meth:`StorageSource.claim`) is safe against every other claimer, in
this process or another one sharing the storage:

1. re-read the conversation: gone unless still ``queued`` and unassigned;
2. re-check the agent: present, online and under capacity (open conversations);
3. write ``assigned`` with ``update_conversation(if_state="queued",
   if_assignee=None)``: exactly one claimer wins, the others get False;
4. count the agent's open conversations again and, if a claim made in another
   process at the same moment pushed it over capacity, give this one back
   (compare-and-set again) and report ``AGENT_FULL``. Of claims that keep
   their conversation, the last to verify saw all of them, so the agent never
   ends up over capacity.

Conventions the gateway writes in ``Conversation.meta`` (read here):
``queued_at`` (UNIX time it started waiting; ``created_at`` otherwise),
``declined_by`` (ids of agents who declined or let an offer time out),
``previous_assignee`` (who held it before it was reopened), and, written here at
claim time, ``assigned_at``, ``assigned_seq`` (the conversation's ``last_seq``
then: the assignee answers with a message after it), ``answer_by`` (when an
unanswered assignment is released, if ``answer_timeout_s`` is set: any process may
release it then) and ``assigned_by`` (the routing service that assigned it, which
releases it on time; the others wait a little longer); ``accepted_at`` and
``answered_at`` are written by the agent workflow.

A live server reads the whole state of a site only to build its indexes
(:meth:`StorageSource.load`: at start-up, after a conflict it cannot explain, and
every ``[routing] rebuild_interval_s``); passes read nothing but the records
events and claims point at.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from kefu.core.domain import ASSIGNED, QUEUED, Agent, Conversation
from kefu.core.storage import StorageBackend
from kefu.plugins.routing.snapshots import (
    AGENT_STATUSES,
    OFFLINE,
    ONLINE,
    AgentSnapshot,
    Claim,
    ConversationSnapshot,
)
from kefu.plugins.routing.stats import AgentStats

log = logging.getLogger(__name__)

#: Conversations read per query when building snapshots (the rebuild pages past it).
SCAN_LIMIT = 10_000


def conversation_snapshot(
    conversation: Conversation, previous_agent_id: str | None = None
) -> ConversationSnapshot:
    """A routing snapshot of a stored conversation; its department is the skill needed."""
    return ConversationSnapshot(
        id=conversation.id,
        site_id=conversation.site_id,
        skill=conversation.department,
        priority=conversation.priority,
        queued_at=float(conversation.meta.get("queued_at", conversation.created_at)),
        previous_agent_id=conversation.meta.get("previous_assignee") or previous_agent_id,
        meta={
            "visitor_id": conversation.visitor_id,
            "declined_by": tuple(conversation.meta.get("declined_by", ())),
        },
    )


def agent_snapshot(agent: Agent, stats: AgentStats, open_count: int = 0) -> AgentSnapshot:
    """A routing snapshot of a stored agent, with this process's statistics."""
    return stats.fill(
        AgentSnapshot(
            id=agent.id,
            site_id=agent.site_id,
            status=agent.status if agent.status in AGENT_STATUSES else OFFLINE,
            capacity=agent.capacity,
            open_count=open_count,
            skills=frozenset(agent.skills),
        )
    )


@dataclass(slots=True)
class SiteState:
    """What storage holds for one site's routing: its agents, waiting and assigned."""

    agents: list[Agent]
    queued: list[Conversation]
    assigned: list[Conversation]


class StorageSource:
    """Routing snapshots and atomic claims over a :class:`kefu.core.storage.StorageBackend`."""

    def __init__(
        self,
        storage: StorageBackend,
        stats: AgentStats | None = None,
        clock: Callable[[], float] = time.time,
        *,
        answer_timeout: Callable[[], float] = lambda: 0.0,
        origin: str | None = None,
    ) -> None:
        self.storage = storage
        self.stats = stats or AgentStats()
        self.clock = clock
        self.answer_timeout = answer_timeout
        self.origin = origin

    async def load(self, site_id: str) -> SiteState:
        """Everything a site's indexes are built from: its agents, and its waiting and
        assigned conversations (pages of :data:`SCAN_LIMIT`)."""
        agents = await self.storage.list_agents(site_id)
        queued = await self.every(site_id, QUEUED)
        assigned = await self.every(site_id, ASSIGNED)
        return SiteState(agents, queued, assigned)

    async def every(self, site_id: str, state: str) -> list[Conversation]:
        """All of a site's conversations in ``state``, newest first, page by page."""
        found: dict[str, Conversation] = {}
        before = None
        while True:
            page = await self.storage.list_conversations(
                site_id, state=state, limit=SCAN_LIMIT, before=before
            )
            fresh = [c for c in page if c.id not in found]
            found.update((c.id, c) for c in fresh)
            if len(page) < SCAN_LIMIT or not fresh:
                return list(found.values())
            # the next page starts at the last one's time: equal times are read twice, not lost
            before = math.nextafter(page[-1].updated_at, math.inf)

    async def open_count(self, site_id: str, agent: Agent) -> int:
        """The agent's open (assigned, unresolved) conversations, counted up to capacity + 1."""
        held = await self.storage.list_conversations(
            site_id, state=ASSIGNED, assignee_id=agent.id, limit=max(agent.capacity, 0) + 1
        )
        return len(held)

    async def agents(self, site_id: str) -> list[AgentSnapshot]:
        """Fresh snapshots of every agent of the site, counted from storage (a plain
        source's view; a live server's engine keeps them up to date instead)."""
        queued = await self.storage.list_conversations(site_id, state=QUEUED, limit=SCAN_LIMIT)
        declined: dict[str, set[str]] = {}
        for conversation in queued:
            for agent_id in conversation.meta.get("declined_by", ()):
                declined.setdefault(agent_id, set()).add(conversation.id)
        # one query counts everyone's open conversations; past SCAN_LIMIT, one per agent
        held = await self.storage.list_conversations(site_id, state=ASSIGNED, limit=SCAN_LIMIT)
        counts: dict[str | None, int] = {}
        for conversation in held:
            counts[conversation.assignee_id] = counts.get(conversation.assignee_id, 0) + 1
        snapshots = []
        for agent in await self.storage.list_agents(site_id):
            if len(held) < SCAN_LIMIT:
                open_count = counts.get(agent.id, 0)
            else:
                open_count = await self.open_count(site_id, agent)
            snapshot = agent_snapshot(agent, self.stats, open_count)
            snapshot.declined = frozenset(declined.get(agent.id, ()))
            snapshots.append(snapshot)
        return snapshots

    async def previous_agent(self, conversation: Conversation) -> str | None:
        """Who served this visitor most recently (another conversation), if anyone."""
        earlier = await self.storage.list_conversations(
            conversation.site_id, visitor_id=conversation.visitor_id, limit=20
        )
        return next(
            (c.assignee_id for c in earlier if c.id != conversation.id and c.assignee_id), None
        )

    async def snapshot(self, conversation: Conversation) -> ConversationSnapshot:
        return conversation_snapshot(conversation, await self.previous_agent(conversation))

    async def claim(self, conversation: ConversationSnapshot, agent: AgentSnapshot) -> Claim:
        stored = await self.storage.get_conversation(conversation.site_id, conversation.id)
        if stored is None or stored.state != QUEUED or stored.assignee_id is not None:
            return Claim.GONE
        return await self.take(stored, agent.id)

    async def take(self, stored: Conversation, agent_id: str, *, online: bool = True) -> Claim:
        """Give ``stored`` (as just read: queued, or assigned to someone else for a
        transfer) to ``agent_id``, compare-and-set on its state and assignee as read.

        The agent must exist, be online (unless ``online`` is False) and have room;
        the capacity is checked again after the write and the conversation given back
        when a concurrent claim filled the agent.
        """
        site_id = stored.site_id
        record = await self.storage.get_agent(site_id, agent_id)
        if record is None or (online and record.status != ONLINE):
            return Claim.AGENT_UNAVAILABLE
        if await self.open_count(site_id, record) >= record.capacity:
            return Claim.AGENT_FULL
        before = (stored.state, stored.assignee_id, stored.meta, stored.updated_at)
        now = self.clock()
        stored.state, stored.assignee_id, stored.updated_at = ASSIGNED, record.id, now
        timeout = self.answer_timeout()
        stored.meta = assigned_meta(
            stored.meta, now, stored.last_seq, now + timeout if timeout > 0 else None, self.origin
        )
        if not await self.storage.update_conversation(
            stored, if_state=before[0], if_assignee=before[1]
        ):
            return Claim.GONE
        if await self.open_count(site_id, record) > record.capacity:
            stored.state, stored.assignee_id, stored.meta, stored.updated_at = before
            if not await self.storage.update_conversation(
                stored, if_state=ASSIGNED, if_assignee=record.id
            ):
                log.warning("claim of %s could not be given back: changed meanwhile", stored.id)
            return Claim.AGENT_FULL
        self.stats.assigned(site_id, record.id, now)
        return Claim.CLAIMED


#: ``meta`` keys describing the current assignment; a new assignment starts them afresh.
ASSIGNMENT_KEYS = (
    "assigned_at",
    "assigned_seq",
    "answer_by",
    "assigned_by",
    "accepted_at",
    "answered_at",
)


def assigned_meta(
    meta: dict, now: float, seq: int, answer_by: float | None = None, by: str | None = None
) -> dict:
    """``meta`` of a conversation just assigned: when, the ``seq`` an answer must follow,
    when it is released unanswered, and which routing service assigned it."""
    kept = {k: v for k, v in meta.items() if k not in ASSIGNMENT_KEYS}
    fresh = {**kept, "assigned_at": now, "assigned_seq": seq}
    if answer_by is not None:
        fresh["answer_by"] = answer_by
    if by is not None:
        fresh["assigned_by"] = by
    return fresh

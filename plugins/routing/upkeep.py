"""Keeping one routing service's indexes in step with storage.

Events say which records changed (:meth:`Upkeep.changed`); other processes say it
over the bus topic :data:`TOPIC`; a claim that storage refused says it too
(:meth:`Upkeep.conflict`). Each pass of a site first reads those records, and only
those (:meth:`Upkeep.refresh`, under the site's lock), into the engine's indexes:
a waiting conversation into the line, an assigned one against its agent (and its
answer deadline into the heap), an agent into the rooms. A site's indexes are built
from storage at its first pass and every ``[routing] rebuild_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from kefu.core.domain import ASSIGNED, QUEUED, RESOLVED, Agent, Conversation
from kefu.plugins.routing.live import agent_snapshot, conversation_snapshot
from kefu.plugins.routing.settings import site_hours
from kefu.plugins.routing.snapshots import Claim

log = logging.getLogger(__name__)

#: Bus topic on which routing services tell each other which records changed.
TOPIC = "kefu.routing.changed"
#: An agent's open conversations counted again at most this many (a claim found them full).
RECOUNT_LIMIT = 500
#: A pending agent change that needs no storage read (statistics moved).
STATS = "stats"


@dataclass
class SiteSync:
    """What a site's indexes still have to read from storage (and when its waiting
    visitors were last told their places, which the service keeps here too)."""

    rebuild: bool = True
    conversations: set[str] = field(default_factory=set)
    #: agent id -> the record already read, None (read it), or STATS (statistics only)
    agents: dict[str, Any] = field(default_factory=dict)
    #: agents whose open conversations are counted again (a claim found them full)
    recount: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)
    hours: bool = True
    built_at: float = 0.0
    told_at: float = -1e18
    told_closed: bool | None = None
    tell_later: asyncio.TimerHandle | None = None
    changed: bool = True


class Upkeep:
    """What each site's indexes still have to read, and the reading, for one service."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.kernel = service.kernel
        self.engine = service.engine
        self.sites: dict[str, SiteSync] = {}

    @property
    def answers(self) -> Any:
        return self.service.workflow.answers

    def site(self, site_id: str) -> SiteSync:
        found = self.sites.get(site_id)
        if found is None:
            found = self.sites[site_id] = SiteSync()
        return found

    def changed(
        self,
        site_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        *,
        record: Agent | None = None,
        tell: bool = True,
    ) -> None:
        """A record changed (here, in another process, or behind routing's back): read it
        again at the next pass of the site (an agent's ``record`` when already read).
        ``tell`` passes the news on to the other processes over the bus."""
        sync = self.site(site_id)
        if conversation_id is not None:
            sync.conversations.add(conversation_id)
        if agent_id is not None:
            sync.agents[agent_id] = record
        if tell:
            self.tell_others(site_id, conversation_id, agent_id)

    def tell_others(
        self,
        site_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        hours: bool = False,
    ) -> None:
        bus = self.kernel.bus
        if bus is None:
            return
        news: dict[str, Any] = {"o": self.service.origin, "s": site_id}
        if conversation_id is not None:
            news["c"] = conversation_id
        if agent_id is not None:
            news["a"] = agent_id
        if hours:
            news["h"] = True
        bus.publish(TOPIC, orjson.dumps(news))

    def on_bus(self, topic: str, payload: bytes) -> None:
        try:
            news = orjson.loads(payload)
            if news.get("o") == self.service.origin:
                return
            site_id = news["s"]
        except (ValueError, TypeError, KeyError, AttributeError):
            return
        if news.get("h"):
            self.site(site_id).hours = True
        self.changed(site_id, news.get("c"), news.get("a"), tell=False)
        self.service.kick(site_id)

    def conflict(self, site_id: str, outcome: Claim, conversation_id: str, agent_id: str) -> None:
        """A claim storage refused: read what it was about again, and pass once more."""
        sync = self.site(site_id)
        if outcome is Claim.GONE:
            sync.conversations.add(conversation_id)
        elif outcome is Claim.AGENT_FULL:
            sync.recount.add(agent_id)
        else:
            sync.agents[agent_id] = None
        self.service._again.add(site_id)

    async def refresh(self, site_id: str) -> None:
        """Read what changed (or, when due, everything) into the site's indexes. Runs
        under the site's lock, first thing in every pass."""
        sync = self.site(site_id)
        interval = self.service.settings.rebuild_interval_s
        if sync.rebuild or (interval > 0 and time.time() - sync.built_at >= interval):
            await self._rebuild(site_id)
        if sync.hours:
            await self._read_hours(site_id)
        storage = self.kernel.storage
        while sync.agents or sync.conversations or sync.recount:
            agents, sync.agents = sync.agents, {}
            conversations, sync.conversations = sync.conversations, set()
            recount, sync.recount = sync.recount, set()
            sync.changed = True
            try:
                for agent_id in list(agents):
                    await self._apply_agent(site_id, agent_id, agents[agent_id])
                    del agents[agent_id]
                for agent_id in list(recount):
                    await self._recount(site_id, agent_id)
                    recount.discard(agent_id)
                for conversation_id in list(conversations):
                    found = await storage.get_conversation(site_id, conversation_id)
                    await self._apply_conversation(site_id, conversation_id, found)
                    conversations.discard(conversation_id)
            except BaseException:
                for agent_id, record in agents.items():  # read again at the next try
                    sync.agents.setdefault(agent_id, record)
                sync.recount |= recount
                sync.conversations |= conversations
                raise

    async def _rebuild(self, site_id: str) -> None:
        """Build the site's indexes from storage (start-up, every rebuild interval)."""
        sync = self.site(site_id)
        # what was noted until now is read below; what changes while reading stays noted
        sync.conversations.clear()
        sync.agents.clear()
        sync.recount.clear()
        sync.hours = True
        await self._read_hours(site_id)
        state = await self.service.source.load(site_id)
        known = self.engine.queue(site_id)
        previous = {c.id: known.get(c.id) for c in state.queued if c.id in known}
        engine = self.engine
        engine.reset(site_id)
        for agent in state.agents:
            engine.put_agent(agent_snapshot(agent, self.service.stats))
        for conversation in state.assigned:
            if conversation.assignee_id is not None:
                engine.hold(site_id, conversation.id, conversation.assignee_id)
                self.answers.track(conversation)
        for conversation in state.queued:
            if conversation.assignee_id is None:
                engine.enqueue(await self._snapshot(conversation, previous.get(conversation.id)))
        sync.rebuild, sync.built_at, sync.changed = False, time.time(), True
        log.debug(
            "routing: site %s indexed: %d agents, %d waiting, %d assigned",
            site_id,
            len(state.agents),
            len(state.queued),
            len(state.assigned),
        )

    async def _read_hours(self, site_id: str) -> None:
        site = await self.kernel.storage.get_site(site_id)
        hours = site_hours(site.settings) if site is not None else None
        if hours is None:
            self.service.site_hours.pop(site_id, None)
        else:
            self.service.site_hours[site_id] = hours
        self.site(site_id).hours = False

    async def _snapshot(self, conversation: Conversation, known: Any = None) -> Any:
        """A waiting conversation's snapshot; the visitor's previous agent is looked up
        once (a conversation already known keeps what was found)."""
        if known is not None:
            return conversation_snapshot(conversation, known.previous_agent_id)
        return await self.service.source.snapshot(conversation)

    async def _apply_conversation(
        self, site_id: str, conversation_id: str, found: Conversation | None
    ) -> None:
        engine, answers = self.engine, self.answers
        known = engine.queue(site_id).get(conversation_id)
        sync = self.site(site_id)
        resolved = conversation_id in sync.resolved
        sync.resolved.discard(conversation_id)
        if found is not None and found.state == ASSIGNED and found.assignee_id is not None:
            engine.hold(site_id, conversation_id, found.assignee_id)  # (out of line, if it was)
            answers.track(found)
            return
        engine.release(site_id, conversation_id)
        answers.disarm(site_id, conversation_id)
        if found is not None and found.state == QUEUED and found.assignee_id is None:
            engine.enqueue(await self._snapshot(found, known))  # replaces the one known
            return
        engine.withdraw(site_id, conversation_id)
        if found is not None and resolved and found.state == RESOLVED:
            assigned_at = found.meta.get("assigned_at")
            if assigned_at is not None and found.resolved_at is not None:
                handled = found.resolved_at - float(assigned_at)
                engine.observe_handled(site_id, found.department, handled)

    async def _apply_agent(self, site_id: str, agent_id: str, record: Any) -> None:
        engine = self.engine
        if record == STATS:
            snapshot = engine.roster(site_id).get(agent_id)
            if snapshot is not None:
                engine.put_agent(self.service.stats.fill(snapshot))
            return
        if record is None:
            record = await self.kernel.storage.get_agent(site_id, agent_id)
        if record is None:
            engine.drop_agent(site_id, agent_id)
        else:
            engine.put_agent(agent_snapshot(record, self.service.stats))

    async def _recount(self, site_id: str, agent_id: str) -> None:
        """A claim found the agent full: count what storage says they hold."""
        record = await self.kernel.storage.get_agent(site_id, agent_id)
        held = await self.kernel.storage.list_conversations(
            site_id, state=ASSIGNED, assignee_id=agent_id, limit=RECOUNT_LIMIT
        )
        ids = {c.id for c in held}
        for conversation_id in self.engine.roster(site_id).holding(agent_id) - ids:
            self.site(site_id).conversations.add(conversation_id)  # not theirs any more
        for conversation in held:
            self.engine.hold(site_id, conversation.id, agent_id)
            self.answers.track(conversation)
        await self._apply_agent(site_id, agent_id, record)

    def restat(self, site_id: str, agent_id: str) -> None:
        """The agent's statistics moved: re-sort them at the next pass (no storage read)."""
        agents = self.site(site_id).agents
        if agent_id not in agents:
            agents[agent_id] = STATS

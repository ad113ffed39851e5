"""The routing engine: filters, a policy, per-site queues, drains and atomic claims.

One engine serves every site of a process. It keeps the waiting conversations
in a :class:`~kefu.plugins.routing.queue.RoutingQueue` per site and, whenever
capacity may have freed (an arrival, a resolution, an agent coming online, a
capacity raise), *drains*: it walks the queue in order and, for each
conversation, asks the policy to choose among the agents every filter accepts,
then claims through the :class:`~kefu.plugins.routing.snapshots.RoutingSource`.

Two routing passes can never assign one conversation twice: inside a process
a per-site :class:`asyncio.Lock` serialises passes and picks; across
processes the source's claim is a storage compare-and-set that fails for all
but one claimer, and it re-checks the agent's capacity after the write.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kefu.core.types import RoutingFilter
from kefu.plugins.routing.filters import CAPACITY
from kefu.plugins.routing.policies import Policy
from kefu.plugins.routing.queue import HandleTimes, RoutingQueue, estimate_wait
from kefu.plugins.routing.snapshots import (
    AgentSnapshot,
    Assignment,
    Claim,
    ConversationSnapshot,
    QueueStatus,
    RoutingSource,
)

log = logging.getLogger(__name__)


class RoutingEngine:
    """Routes waiting conversations of many sites with one filter chain and one policy."""

    def __init__(
        self,
        *,
        filters: Iterable[RoutingFilter],
        policy: Policy,
        source: RoutingSource,
        clock: Callable[[], float] = time.time,
        handle_times: HandleTimes | None = None,
        hours_for: Callable[[str], Any] | None = None,
    ) -> None:
        self.filters = tuple(filters)
        self.policy = policy
        self.source = source
        self.clock = clock
        self.handle_times = handle_times or HandleTimes()
        self.hours_for = hours_for or (lambda site_id: None)
        self._queues: dict[str, RoutingQueue] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned: set[str] = set()

    # -- the queue ----------------------------------------------------------------
    def queue(self, site_id: str) -> RoutingQueue:
        queue = self._queues.get(site_id)
        if queue is None:
            queue = self._queues[site_id] = RoutingQueue()
        return queue

    def sites(self) -> list[str]:
        return [site for site, queue in self._queues.items() if len(queue)]

    def enqueue(self, conversation: ConversationSnapshot) -> None:
        """Put a conversation in its site's line (call :meth:`drain` afterwards)."""
        self.queue(conversation.site_id).push(conversation)

    def withdraw(self, site_id: str, conversation_id: str) -> ConversationSnapshot | None:
        """Take a conversation out of the line (abandoned, resolved by a bot, claimed elsewhere)."""
        return self.queue(site_id).remove(conversation_id)

    def lock(self, site_id: str) -> asyncio.Lock:
        lock = self._locks.get(site_id)
        if lock is None:
            lock = self._locks[site_id] = asyncio.Lock()
        return lock

    # -- eligibility and choice -------------------------------------------------------
    def _prepare(self, conversation: ConversationSnapshot) -> ConversationSnapshot:
        conversation.now = self.clock()
        conversation.hours = self.hours_for(conversation.site_id)
        return conversation

    async def eligible(
        self,
        conversation: ConversationSnapshot,
        agents: Iterable[AgentSnapshot],
        *,
        skip: frozenset[str] = frozenset(),
    ) -> list[AgentSnapshot]:
        """The agents every filter (except those named in ``skip``) accepts."""
        checks = [f for f in self.filters if f.name not in skip]
        return [a for a in agents if await self._passes(checks, conversation, a)]

    async def _passes(
        self, checks: list[RoutingFilter], conversation: ConversationSnapshot, agent: AgentSnapshot
    ) -> bool:
        for check in checks:
            try:
                accepted = check.accepts(conversation, agent)
                if inspect.isawaitable(accepted):
                    accepted = await accepted
            except Exception:
                # Fail closed: a broken filter may guard tenancy or permissions.
                if check.name not in self._warned:
                    self._warned.add(check.name)
                    log.exception("routing filter %r raised; treated as rejecting", check.name)
                return False
            if not accepted:
                return False
        return True

    async def choose(
        self, conversation: ConversationSnapshot, agents: Iterable[AgentSnapshot]
    ) -> AgentSnapshot | None:
        """The policy's choice among the eligible agents, or None to keep waiting."""
        candidates = await self.eligible(self._prepare(conversation), agents)
        if not candidates:
            return None
        return await self.policy.select(conversation, candidates)

    # -- draining ---------------------------------------------------------------------
    async def drain(self, site_id: str) -> list[Assignment]:
        """Assign as many waiting conversations of the site as capacity allows, in order.

        Call it whenever capacity may have freed. A conversation nobody can take
        stays in line without blocking those behind it (another department may
        have room). Returns the assignments made.
        """
        queue = self.queue(site_id)
        if not len(queue) or not self.policy.assigns:
            return []
        async with self.lock(site_id):
            agents = sorted(await self.source.agents(site_id), key=lambda a: a.id)
            made: list[Assignment] = []
            for conversation in queue.ordered():
                if not any(a.open_count < a.capacity for a in agents):
                    break
                assignment = await self._assign(conversation, agents)
                if assignment is not None:
                    made.append(assignment)
            return made

    async def _assign(
        self, conversation: ConversationSnapshot, agents: list[AgentSnapshot]
    ) -> Assignment | None:
        for _ in range(len(agents) + 1):
            room = [a for a in agents if a.open_count < a.capacity]
            agent = await self.choose(conversation, room)
            if agent is None:
                return None
            result = await self._claim(conversation, agent, agents)
            if result is not None:
                return result if isinstance(result, Assignment) else None
        return None

    async def _claim(
        self, conversation: ConversationSnapshot, agent: AgentSnapshot, agents: list[AgentSnapshot]
    ) -> Assignment | Claim | None:
        """Claim once; an Assignment, Claim.GONE (stop trying), or None (try another agent)."""
        outcome = await self.source.claim(conversation, agent)
        if outcome is Claim.CLAIMED:
            self.withdraw(conversation.site_id, conversation.id)
            now = self.clock()
            agent.open_count += 1
            agent.last_assigned_at = now
            return Assignment(
                conversation.id,
                agent.id,
                conversation.site_id,
                max(now - conversation.queued_at, 0.0),
                self.policy.name,
            )
        if outcome is Claim.GONE:
            self.withdraw(conversation.site_id, conversation.id)
            return Claim.GONE
        if outcome is Claim.AGENT_FULL:
            agent.open_count = max(agent.open_count, agent.capacity)
        else:
            agents.remove(agent)
        return None

    async def pick(
        self, site_id: str, agent_id: str, conversation_id: str | None = None
    ) -> Assignment | None:
        """An agent takes a waiting conversation from the pool (``manual``, or any policy).

        With no ``conversation_id`` the agent gets the first one in line they
        are eligible for. Every filter applies, capacity included; None when
        nothing could be taken (not eligible, full, or someone else won).
        """
        async with self.lock(site_id):
            agents = await self.source.agents(site_id)
            agent = next((a for a in agents if a.id == agent_id), None)
            if agent is None:
                return None
            queue = self.queue(site_id)
            if conversation_id is not None:
                wanted = queue.get(conversation_id)
                line = [wanted] if wanted is not None else []
            else:
                line = queue.ordered()
            for conversation in line:
                if await self.eligible(self._prepare(conversation), [agent]):
                    result = await self._claim(conversation, agent, [agent])
                    return result if isinstance(result, Assignment) else None
            return None

    # -- what visitors are told ----------------------------------------------------------
    async def status(
        self, site_id: str, conversation_ids: Iterable[str] | None = None
    ) -> dict[str, QueueStatus]:
        """Position and estimated wait of waiting conversations (all of the site by default).

        The estimate uses the recent handle time of the conversation's skill and
        the agents who could take it (every filter but capacity).
        """
        queue = self.queue(site_id)
        positions = queue.positions()
        wanted = positions.keys() if conversation_ids is None else conversation_ids
        agents = await self.source.agents(site_id)
        result = {}
        for conversation_id in wanted:
            conversation = queue.get(conversation_id)
            if conversation is None:
                continue
            self._prepare(conversation)
            able = await self.eligible(conversation, agents, skip=frozenset({CAPACITY}))
            position = positions[conversation_id]
            eta = estimate_wait(
                position,
                self.handle_times.mean(site_id, conversation.skill),
                sum(a.capacity for a in able),
                sum(a.spare for a in able),
            )
            result[conversation_id] = QueueStatus(conversation_id, position, eta, len(able))
        return result

    def observe_handled(self, site_id: str, skill: str | None, seconds: float) -> None:
        """Feed one handle time (assignment to resolution) into the wait estimate."""
        self.handle_times.observe(site_id, skill, seconds)

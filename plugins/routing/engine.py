"""The routing engine: filters, a policy, per-site indexes, drains and atomic claims.

One engine serves every site of a process. Per site it keeps the waiting
conversations (:class:`~kefu.plugins.routing.queue.RoutingQueue`, per skill) and the
agents (:class:`~kefu.plugins.routing.roster.Roster`, with a *room* per skill: the
agents the built-in filters would offer it to, in the orders the policy's chooser
walks, :mod:`~kefu.plugins.routing.choice`). Whenever capacity may have freed, it
*drains*: it takes the first waiting conversation, in line order, among the skills
somebody has room for, lets the chooser find the policy's choice, claims through
the :class:`~kefu.plugins.routing.snapshots.RoutingSource`, and goes on until no
skill with room has anyone waiting. A conversation nobody with room may take (every
one of them declined it, a third party's filter) is parked until somebody who
serves its skill gets room again. The cost of a pass is the assignments it makes
and the conversations it parks, times O(log n): never the length of the line times
the number of agents.

Two ways to feed the agents. A plain source (``live=False``: tests, the simulator)
is asked for fresh snapshots at every pass, as before. The server's engine
(``live=True``) is fed by the routing service from events and storage reads, and
counts open conversations itself; a claim that storage refuses (the agent is full,
away, or the conversation is gone) is reported through :attr:`on_conflict` so that
the service reads those records again.

Two routing passes can never assign one conversation twice: inside a process
a per-site :class:`asyncio.Lock` serialises passes and picks; across
processes the source's claim is a storage compare-and-set that fails for all
but one claimer, and it re-checks the agent's capacity after the write.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kefu.core.types import RoutingFilter
from kefu.plugins.routing import filters as builtin
from kefu.plugins.routing.choice import Chooser, chooser_for
from kefu.plugins.routing.filters import CAPACITY
from kefu.plugins.routing.policies import Policy
from kefu.plugins.routing.queue import HandleTimes, RoutingQueue, estimate_wait
from kefu.plugins.routing.roster import Roster
from kefu.plugins.routing.snapshots import (
    OFFLINE,
    ONLINE,
    AgentSnapshot,
    Assignment,
    Claim,
    ConversationSnapshot,
    QueueStatus,
    RoutingSource,
)

log = logging.getLogger(__name__)

#: Filters the rooms apply by construction (tenancy, presence, skill, capacity).
INDEXED_FILTERS = (
    builtin.same_site,
    builtin.online_and_accepting,
    builtin.has_skill,
    builtin.under_capacity,
)
BUILTIN_CHECKS = frozenset(f.accepts for f in builtin.BUILTIN_FILTERS)
#: Claims that fail in a row (storage down) before a pass gives up; the service retries.
MAX_FAILED_CLAIMS = 3

#: ``on_conflict(site_id, outcome, conversation_id, agent_id)``
Conflict = Callable[[str, Claim, str, str], None]


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
        live: bool = False,
    ) -> None:
        self.filters = tuple(filters)
        self.policy = policy
        self.source = source
        self.clock = clock
        self.handle_times = handle_times or HandleTimes()
        self.hours_for = hours_for or (lambda site_id: None)
        self.live = live
        self.on_conflict: Conflict | None = None
        #: per site, claims of its last pass that raised (storage failed); the service retries
        self.failed_claims: dict[str, int] = {}
        self._queues: dict[str, RoutingQueue] = {}
        self._rosters: dict[str, Roster] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned: set[str] = set()
        self._chooser: Chooser = chooser_for(policy)
        self._split_of: tuple | None = None
        self._rest: list[RoutingFilter] = []
        self._indexed = True
        self._builtin_only = True
        self._hours_filter = True

    # -- the indexes ----------------------------------------------------------------
    def queue(self, site_id: str) -> RoutingQueue:
        queue = self._queues.get(site_id)
        if queue is None:
            queue = self._queues[site_id] = RoutingQueue()
        return queue

    def roster(self, site_id: str) -> Roster:
        roster = self._rosters.get(site_id)
        if roster is None:
            orders = self._current_chooser().orders
            roster = self._rosters[site_id] = Roster(site_id, orders, live=self.live)
        return roster

    def sites(self) -> list[str]:
        return [site for site, queue in self._queues.items() if len(queue)]

    def enqueue(self, conversation: ConversationSnapshot) -> None:
        """Put a conversation in its site's line (call :meth:`drain` afterwards)."""
        self.queue(conversation.site_id).push(conversation)
        if self.live:
            declined = conversation.meta.get("declined_by") or ()
            self.roster(conversation.site_id).decline(conversation.id, declined)

    def withdraw(self, site_id: str, conversation_id: str) -> ConversationSnapshot | None:
        """Take a conversation out of the line (abandoned, resolved by a bot, claimed elsewhere)."""
        found = self.queue(site_id).remove(conversation_id)
        if found is not None and self.live:
            self.roster(site_id).decline(conversation_id, ())
        return found

    def put_agent(self, agent: AgentSnapshot) -> None:
        """Add or replace an agent (live); a slot or presence gained lets parked ones in."""
        self._entered(agent.site_id, self.roster(agent.site_id).upsert(agent))

    def drop_agent(self, site_id: str, agent_id: str) -> None:
        self.roster(site_id).remove(agent_id)

    def hold(self, site_id: str, conversation_id: str, agent_id: str) -> None:
        """A conversation is assigned to ``agent_id`` (live): it counts against them."""
        self.withdraw(site_id, conversation_id)
        roster = self.roster(site_id)
        if roster.holder.get(conversation_id) == agent_id:
            return
        _, entered = roster.release(conversation_id)  # someone else's before: they have room
        roster.hold(conversation_id, agent_id)
        self._entered(site_id, entered)

    def release(self, site_id: str, conversation_id: str) -> str | None:
        """A conversation is no longer assigned (live): its agent has a slot again."""
        agent_id, entered = self.roster(site_id).release(conversation_id)
        self._entered(site_id, entered)
        return agent_id

    def reset(self, site_id: str) -> None:
        """Forget a site's indexes (before rebuilding them from storage)."""
        self._queues.pop(site_id, None)
        self._rosters.pop(site_id, None)

    def _entered(self, site_id: str, skills: set) -> None:
        if skills:
            self.queue(site_id).unpark(skills)

    def lock(self, site_id: str) -> asyncio.Lock:
        lock = self._locks.get(site_id)
        if lock is None:
            lock = self._locks[site_id] = asyncio.Lock()
        return lock

    def _current_chooser(self) -> Chooser:
        """The chooser of the policy in force; rebuilds the rooms when it changed."""
        if self._chooser.stale(self.policy):
            self._chooser = chooser_for(self.policy)
            for roster in self._rosters.values():
                roster.reorder(self._chooser.orders)
        return self._chooser

    def _split(self) -> None:
        """Which filters the rooms apply already; the rest run per candidate."""
        if self._split_of is self.filters:
            return
        checks = {f.accepts for f in self.filters}
        self._indexed = all(check in checks for check in INDEXED_FILTERS[1:])
        self._hours_filter = builtin.inside_business_hours in checks
        self._builtin_only = checks <= BUILTIN_CHECKS and self._indexed
        skip = (*INDEXED_FILTERS, builtin.inside_business_hours) if self._indexed else ()
        self._rest = [f for f in self.filters if f.accepts not in skip]
        self._split_of = self.filters

    # -- eligibility and choice -------------------------------------------------------
    def _prepare(self, conversation: ConversationSnapshot) -> ConversationSnapshot:
        conversation.now = self.clock()
        conversation.hours = self.hours_for(conversation.site_id)
        return conversation

    def closed(self, site_id: str) -> bool:
        """Outside the site's business hours now (the ``business_hours`` filter)."""
        hours = self.hours_for(site_id)
        return hours is not None and not hours.is_open(self.clock())

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
                if accepted is True:  # the common, synchronous case, without a type check
                    continue
                if accepted is not False and inspect.isawaitable(accepted):
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
        """The policy's choice among the eligible agents, or None to keep waiting (every
        filter, every agent given: the reference the indexed choice is tested against)."""
        candidates = await self.eligible(self._prepare(conversation), agents)
        if not candidates:
            return None
        return await self.policy.select(conversation, candidates)

    async def choose_indexed(self, conversation: ConversationSnapshot) -> AgentSnapshot | None:
        """The same choice as :meth:`choose` over the site's agents, found in the rooms."""
        self._split()
        roster = self.roster(conversation.site_id)
        chooser = self._current_chooser()
        self._prepare(conversation)
        if not self._indexed:
            return await self.choose(conversation, sorted(roster.agents.values(), key=_id))
        if self._hours_filter and self.closed(conversation.site_id):
            return None
        room = roster.room(conversation.skill)
        if room is None:
            return None
        checks = self._rest

        async def accept(agent: AgentSnapshot) -> bool:
            return await self._passes(checks, conversation, agent)

        return await chooser.choose(conversation, room, roster.agents, accept)

    # -- draining ---------------------------------------------------------------------
    async def drain(
        self, site_id: str, *, prepare: Callable[[str], Awaitable[None]] | None = None
    ) -> list[Assignment]:
        """Assign as many waiting conversations of the site as capacity allows, in order.

        Call it whenever capacity may have freed. A conversation nobody can take
        stays in line without blocking those behind it (another department may
        have room). ``prepare(site_id)`` runs first under the site's lock (the
        service brings the indexes up to date there). Returns the assignments made.
        """
        async with self.lock(site_id):
            if prepare is not None:
                await prepare(site_id)
            self.failed_claims[site_id] = 0
            queue = self.queue(site_id)
            if not len(queue) or not self.policy.assigns:
                return []
            if not self.live:
                await self.pull(site_id)
            self._split()
            self._current_chooser()
            if not self._indexed:
                return await self._drain_every_agent(site_id)
            if self._hours_filter and self.closed(site_id):
                return []
            return await self._drain_rooms(site_id)

    async def _drain_rooms(self, site_id: str) -> list[Assignment]:
        queue, roster = self.queue(site_id), self.roster(site_id)
        heap = [(queue.head_key(s), s) for s in queue.active_skills() if roster.has_room(s)]
        heapq.heapify(heap)
        made: list[Assignment] = []
        failed: list[str] = []
        looked: list[str] = []  # a third party's filter may change its mind: look again
        in_a_row = 0
        while heap:
            key, skill = heapq.heappop(heap)
            if not roster.has_room(skill):
                continue
            head = queue.head_key(skill)
            if head != key:  # the line changed while a claim was awaited
                if head is not None:
                    heapq.heappush(heap, (head, skill))
                continue
            conversation = queue.head(skill)
            try:
                assignment = await self._assign(conversation)
            except Exception as exc:
                failures = self.failed_claims[site_id] = self.failed_claims[site_id] + 1
                if failures == 1:
                    log.warning("routing: claiming %s failed (%r); it waits", conversation.id, exc)
                    log.debug("the claim's failure", exc_info=True)
                queue.park(conversation.id)
                failed.append(conversation.id)
                in_a_row += 1
                if in_a_row >= MAX_FAILED_CLAIMS:
                    break  # storage is down, not one record: the service tries again later
            else:
                in_a_row = 0
                if assignment is not None:
                    made.append(assignment)
                elif conversation.id in queue:
                    queue.park(conversation.id)
                    if not self._builtin_only:
                        looked.append(conversation.id)
            head = queue.head_key(skill)
            if head is not None and roster.has_room(skill):
                heapq.heappush(heap, (head, skill))
        for conversation_id in (*failed, *looked):
            queue.restore(conversation_id)
        return made

    async def _assign(self, conversation: ConversationSnapshot) -> Assignment | None:
        roster = self.roster(conversation.site_id)
        for _ in range(len(roster.agents) + 1):
            agent = await self.choose_indexed(conversation)
            if agent is None:
                return None
            result = await self._claim(conversation, agent)
            if result is not None:
                return result if isinstance(result, Assignment) else None
        return None

    async def _drain_every_agent(self, site_id: str) -> list[Assignment]:
        """Without the built-in filters the rooms mean nothing: every agent, every time."""
        agents = sorted(self.roster(site_id).agents.values(), key=_id)
        made: list[Assignment] = []
        for conversation in self.queue(site_id).ordered():
            if not any(a.open_count < a.capacity for a in agents):
                break
            for _ in range(len(agents) + 1):
                room = [a for a in agents if a.open_count < a.capacity]
                agent = await self.choose(conversation, room)
                if agent is None:
                    break
                status = agent.status
                result = await self._claim(conversation, agent)
                if isinstance(result, Assignment):
                    made.append(result)
                if result is not None:
                    break
                if agent.status != status:  # unavailable: not again in this pass
                    agents.remove(agent)
        return made

    async def _claim(
        self, conversation: ConversationSnapshot, agent: AgentSnapshot
    ) -> Assignment | Claim | None:
        """Claim once; an Assignment, Claim.GONE (stop trying), or None (try another agent)."""
        site_id = conversation.site_id
        roster = self.roster(site_id)
        outcome = await self.source.claim(conversation, agent)
        if outcome is Claim.CLAIMED:
            self.withdraw(site_id, conversation.id)
            now = self.clock()
            roster.assigned(agent.id, conversation.id, now)
            return Assignment(
                conversation.id,
                agent.id,
                site_id,
                max(now - conversation.queued_at, 0.0),
                self.policy.name,
            )
        if outcome is Claim.GONE:
            self.withdraw(site_id, conversation.id)
        elif outcome is Claim.AGENT_FULL:
            roster.full(agent.id)
        else:  # away or gone meanwhile: not offered anything until read again
            agent.status = OFFLINE
            roster.reindex(agent.id)
        if self.on_conflict is not None:
            self.on_conflict(site_id, outcome, conversation.id, agent.id)
        return Claim.GONE if outcome is Claim.GONE else None

    async def pull(self, site_id: str) -> None:
        """A plain source: fresh snapshots of every agent (changed ones are re-indexed)."""
        roster = self.roster(site_id)
        fresh = await self.source.agents(site_id)
        seen = set()
        for agent in fresh:
            seen.add(agent.id)
            self._entered(site_id, roster.upsert(agent))
        for agent_id in set(roster.agents) - seen:
            roster.remove(agent_id)

    async def pick(
        self, site_id: str, agent_id: str, conversation_id: str | None = None
    ) -> Assignment | None:
        """An agent takes a waiting conversation from the pool (``manual``, or any policy).

        With no ``conversation_id`` the agent gets the first one in line they
        are eligible for. Every filter applies, capacity included; None when
        nothing could be taken (not eligible, full, or someone else won).
        """
        async with self.lock(site_id):
            if not self.live:
                await self.pull(site_id)
            self._split()
            agent = self.roster(site_id).get(agent_id)
            if agent is None:
                return None
            if self._indexed and not (
                agent.status == ONLINE and agent.accepting and agent.open_count < agent.capacity
            ):
                return None
            queue = self.queue(site_id)
            if conversation_id is not None:
                wanted = queue.get(conversation_id)
                line = [wanted] if wanted is not None else []
            elif self._indexed:
                line = queue.of_skills({None, *agent.skills})
            else:
                line = queue.ordered()
            for conversation in line:
                if await self.eligible(self._prepare(conversation), [agent]):
                    result = await self._claim(conversation, agent)
                    return result if isinstance(result, Assignment) else None
            return None

    # -- what visitors are told ----------------------------------------------------------
    async def status(
        self, site_id: str, conversation_ids: Iterable[str] | None = None
    ) -> dict[str, QueueStatus]:
        """Position and estimated wait of waiting conversations (all of the site by default).

        The estimate uses the recent handle time of the conversation's skill and
        the agents who could take it (every filter but capacity): with the built-in
        filters those are the roster's pool for the skill minus whoever declined the
        conversation, O(1) each.
        """
        if not self.live:
            async with self.lock(site_id):
                await self.pull(site_id)
        self._split()
        queue = self.queue(site_id)
        if conversation_ids is None:
            positions = queue.positions()
        else:
            positions = {c: p for c in conversation_ids if (p := queue.position(c)) is not None}
        waiting = {cid: (queue.get(cid), position) for cid, position in positions.items()}
        return await self._statuses(site_id, waiting)

    async def status_of(self, conversation: ConversationSnapshot) -> QueueStatus:
        """The status a conversation not in the line yet (another process queued it, the
        next pass reads it) would have."""
        site_id = conversation.site_id
        if conversation.id in self.queue(site_id):
            return (await self.status(site_id, [conversation.id]))[conversation.id]
        if not self.live:
            async with self.lock(site_id):
                await self.pull(site_id)
        self._split()
        position = self.queue(site_id).would_be(conversation)
        found = await self._statuses(
            conversation.site_id, {conversation.id: (conversation, position)}
        )
        return found[conversation.id]

    async def _statuses(
        self, site_id: str, waiting: dict[str, tuple[ConversationSnapshot, int]]
    ) -> dict[str, QueueStatus]:
        roster = self.roster(site_id)
        closed = self._hours_filter and self.closed(site_id)
        agents = None if self._builtin_only else list(roster.agents.values())
        handle_times: dict = {}  # skill -> recent handle time
        result = {}
        for conversation_id, (conversation, position) in waiting.items():
            skill = conversation.skill
            if agents is not None:
                self._prepare(conversation)
                able = await self.eligible(conversation, agents, skip=frozenset({CAPACITY}))
                count = len(able)
                slots = sum(a.capacity for a in able)
                spare = sum(a.spare for a in able)
            elif closed:
                count = slots = spare = 0
            else:
                count, slots, spare = roster.pool(skill)
                for declined in roster.decliners.get(conversation_id, ()):
                    agent = roster.agents.get(declined)
                    if agent is not None and _serves(agent, skill):
                        count, slots, spare = count - 1, slots - agent.capacity, spare - agent.spare
            handle = handle_times.get(skill)
            if handle is None:
                handle = handle_times[skill] = self.handle_times.mean(site_id, skill)
            eta = estimate_wait(position, handle, slots, spare)
            result[conversation_id] = QueueStatus(conversation_id, position, eta, count)
        return result

    def observe_handled(self, site_id: str, skill: str | None, seconds: float) -> None:
        """Feed one handle time (assignment to resolution) into the wait estimate."""
        self.handle_times.observe(site_id, skill, seconds)


def _id(agent: AgentSnapshot) -> str:
    return agent.id


def _serves(agent: AgentSnapshot, skill: str | None) -> bool:
    """In the roster's pool for ``skill``: online, accepting, serving it."""
    return agent.status == ONLINE and agent.accepting and (skill is None or skill in agent.skills)

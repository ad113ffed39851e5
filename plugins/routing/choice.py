"""Finding a policy's choice in a room index without scoring every agent of the site.

A *chooser* gives the orders a :class:`~kefu.plugins.routing.roster.Room` keeps its
agents in, and walks them to find exactly the agent the policy's ``select`` would
pick among all eligible agents (``tests/test_routing_index.py`` checks it against
the brute-force choice on random sites):

- ``least_open``: one order, the policy's own key (open, open/capacity, last
  assignment, id); the first agent the other filters accept is the choice.
- ``round_robin``: agents by id; the first accepted after the last one chosen, else
  the first accepted from the start.
- ``weighted`` with the built-in factors: the score is a *static* part (``load``,
  ``skill_match``, ``first_response``, ``satisfaction``: they change only when the
  agent does), ``idle_time`` (grows with the clock) and ``returning_visitor`` (one
  agent per conversation). The room keeps agents by static score and by last
  assignment; the walk takes one agent from each order in turn (Fagin's threshold
  algorithm) and stops once no agent not yet seen can reach the best score found:
  ``static at the first cursor + weight x idle at the second < best``. The
  returning visitor's agent is looked at first. The policy's own ``select`` then
  decides among the agents within 1e-7 of the best (its rounding and tie-breaks).
- anything else (a third party's policy, a factor of another plugin): the agents
  with room for the skill, in id order, that every filter accepts, handed to the
  policy's ``select``, which is the old behaviour minus the agents who are away,
  full or lack the skill.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from kefu.plugins.routing import factors as builtin
from kefu.plugins.routing.policies import (
    LeastOpenPolicy,
    Policy,
    RoundRobinPolicy,
    WeightedPolicy,
)
from kefu.plugins.routing.roster import Order, Room
from kefu.plugins.routing.snapshots import AgentSnapshot, ConversationSnapshot

Accept = Callable[[AgentSnapshot], Awaitable[bool]]

#: Agents whose approximate score is this close to the best are decided by the policy.
SLACK = 1e-7

STATIC_FACTORS = (builtin.load, builtin.skill_match, builtin.first_response, builtin.satisfaction)


def by_id(agent: AgentSnapshot, skill: Any) -> tuple:
    return (agent.id,)


class Chooser:
    """Any policy: every accepted agent with room, in id order, to the policy's select."""

    orders: tuple[Order, ...] = (by_id,)

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def stale(self, policy: Policy) -> bool:
        """Whether ``policy`` needs another chooser (replaced, or weighed anew)."""
        return policy is not self.policy

    async def choose(
        self, conversation: ConversationSnapshot, room: Room, agents: dict, accept: Accept
    ) -> AgentSnapshot | None:
        candidates = []
        for key in room.ordered():
            agent = agents[key[-1]]
            if await accept(agent):
                candidates.append(agent)
        if not candidates:
            return None
        return await self.policy.select(conversation, candidates)


def least_open_key(agent: AgentSnapshot, skill: Any) -> tuple:
    ratio = agent.open_count / agent.capacity if agent.capacity else 1.0
    last = agent.last_assigned_at if agent.last_assigned_at is not None else -1e18
    return (agent.open_count, ratio, last, agent.id)


class LeastOpenChooser(Chooser):
    orders = (least_open_key,)

    async def choose(self, conversation, room, agents, accept):
        for key in room.ordered():
            agent = agents[key[-1]]
            if await accept(agent):
                return agent
        return None


class RoundRobinChooser(Chooser):
    orders = (by_id,)

    async def choose(self, conversation, room, agents, accept):
        policy: RoundRobinPolicy = self.policy  # type: ignore[assignment]
        last = policy._last.get(conversation.site_id)
        chosen = None
        if last is not None:
            for key in room.after(0, (last,)):
                if await accept(agents[key[-1]]):
                    chosen = agents[key[-1]]
                    break
        if chosen is None:
            for key in room.ordered():
                if last is not None and key[0] > last:
                    break
                if await accept(agents[key[-1]]):
                    chosen = agents[key[-1]]
                    break
        if chosen is not None:
            policy._last[conversation.site_id] = chosen.id
        return chosen


class WeightedChooser(Chooser):
    """The threshold walk of the module docstring, for the built-in factors."""

    def __init__(self, policy: WeightedPolicy) -> None:
        super().__init__(policy)
        self.terms = policy._terms
        self.static = [(f.score, w) for f, w in self.terms if f.score in STATIC_FACTORS]
        self.idle_w = sum(w for f, w in self.terms if f.score is builtin.idle_time)
        self.returning_w = sum(w for f, w in self.terms if f.score is builtin.returning_visitor)
        self._probes: dict[tuple[str, Any], ConversationSnapshot] = {}
        orders: list[Order] = [self.static_key]
        if self.idle_w:
            orders.append(idle_key)
        self.orders = tuple(orders)

    @staticmethod
    def handles(policy: Policy) -> bool:
        known = (*STATIC_FACTORS, builtin.idle_time, builtin.returning_visitor)
        return type(policy) is WeightedPolicy and all(f.score in known for f, _ in policy._terms)

    def stale(self, policy: Policy) -> bool:
        return policy is not self.policy or policy._terms is not self.terms

    def static_score(self, agent: AgentSnapshot, skill: Any) -> float:
        probe = self._probes.get((agent.site_id, skill))
        if probe is None:
            probe = ConversationSnapshot(id="", site_id=agent.site_id, skill=skill)
            self._probes[agent.site_id, skill] = probe
        return sum(w * score(probe, agent) for score, w in self.static)

    def static_key(self, agent: AgentSnapshot, skill: Any) -> tuple:
        return (-self.static_score(agent, skill), agent.id)

    async def choose(self, conversation, room, agents, accept):
        idle_w, returning_w = self.idle_w, self.returning_w
        previous = conversation.previous_agent_id if returning_w else None
        seen: set[str] = set()
        scored: list[tuple[float, AgentSnapshot]] = []
        best = -math.inf

        async def look(agent: AgentSnapshot) -> None:
            nonlocal best
            seen.add(agent.id)
            if not await accept(agent):
                return
            total = -room.entries[agent.id][0][0]  # the static score the room sorted by
            if idle_w:
                total += idle_w * builtin.idle_time(conversation, agent)
            if agent.id == previous:
                total += returning_w
            scored.append((total, agent))
            best = max(best, total)

        if previous is not None and previous in room:
            await look(agents[previous])
        by_static = room.ordered(0)
        by_idle = room.ordered(1) if idle_w else None
        while True:
            key = next(by_static, None)
            if key is None:
                break
            static_bound = -key[0]
            if key[-1] not in seen:
                await look(agents[key[-1]])
            idle_bound = 0.0
            if by_idle is not None:
                key = next(by_idle, None)
                if key is None:
                    break
                agent = agents[key[-1]]
                idle_bound = builtin.idle_time(conversation, agent)
                if agent.id not in seen:
                    await look(agent)
            if static_bound + idle_w * idle_bound < best - SLACK:
                break
        near = sorted((a for total, a in scored if total >= best - SLACK), key=lambda a: a.id)
        if not near:
            return None
        return await self.policy.select(conversation, near)


def idle_key(agent: AgentSnapshot, skill: Any) -> tuple:
    last = agent.last_assigned_at
    return (-math.inf if last is None else last, agent.id)


def chooser_for(policy: Policy) -> Chooser:
    """The fastest chooser that finds exactly what ``policy`` would choose."""
    if type(policy) is LeastOpenPolicy:
        return LeastOpenChooser(policy)
    if type(policy) is RoundRobinPolicy:
        return RoundRobinChooser(policy)
    if WeightedChooser.handles(policy):
        return WeightedChooser(policy)  # type: ignore[arg-type]
    return Chooser(policy)

"""Discrete-event simulation of a contact centre, run through kefu's routing engine.

Every policy runs on the *same* seeded trace: Poisson arrivals whose rate
peaks in the afternoon, two departments, priorities, returning visitors,
visitors who give up after a patience time, and agents of different speed and
capacity who work shifts, take breaks and come back. The routing decisions
are made by the plugin's own code: a kernel is loaded with
``kefu.plugins.routing`` and the engine, filters, weight factors, policies,
queue and wait estimate come from it exactly as on a live server. Only the
*source* (where snapshots come from, how a claim is recorded) is the simulated
world instead of a storage backend.

    .venv/bin/python tests/bench/routing_sim.py            # table, < 60 s on 2 cores
    .venv/bin/python tests/bench/routing_sim.py --json     # one object keyed by policy
    .venv/bin/python tests/bench/routing_sim.py --weights load=3,first_response=2

Wait = arrival to the agent's first reply (what the visitor feels); its
percentiles are over answered conversations. Load = an agent's open
conversations divided by their capacity, averaged over the time they were
online; ``max_mean_load_ratio`` = the busiest agent's load / the team's mean.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from kefu.core.kernel import load_kernel
from kefu.plugins.routing.service import build_engine
from kefu.plugins.routing.snapshots import (
    AWAY,
    OFFLINE,
    ONLINE,
    AgentSnapshot,
    Claim,
    ConversationSnapshot,
)
from kefu.plugins.routing.stats import AgentStats

SITE = "sim"
DAY = 86_400.0
POLICIES = ("weighted", "round_robin", "least_open", "manual")


@dataclass(frozen=True)
class Scenario:
    """The world. Fixed before any weight was tuned; change it and re-tune honestly."""

    days: int = 5
    base_per_h: float = 45.0  # arrival rate at night
    peak_per_h: float = 260.0  # extra rate at the peak
    peak_hour: float = 14.0
    peak_sigma_h: float = 2.5
    sales_share: float = 0.3  # the rest needs "support"
    priority_share: float = 0.05
    returning_share: float = 0.25
    patience_mean_s: float = 240.0
    handle_mean_s: float = 420.0
    concurrency_slowdown: float = 0.35  # each other open chat makes a chat this much slower
    returning_speedup: float = 0.75  # handle time factor when the previous agent answers
    frt_base_s: float = 6.0  # first reply of an idle, speed-1 agent
    frt_per_open_s: float = 10.0  # extra first-reply delay per other open chat
    break_every_s: float = 7_200.0
    break_mean_s: float = 720.0
    pick_delay_mean_s: float = 20.0  # manual: time to notice and pick from the pool


@dataclass(frozen=True)
class Arrival:
    id: str
    t: float
    skill: str
    priority: int
    patience: float
    handle_base: float
    frt_jitter: float
    returning_of: int | None  # index of an earlier arrival of the same visitor
    rating: float | None


@dataclass(frozen=True)
class AgentSpec:
    id: str
    speed: float
    capacity: int
    skills: frozenset[str]
    csat: float
    timeline: tuple[tuple[float, str], ...]  # (time, status), sorted


#: (start hour, end hour, agents); 31 = 07:00 the next day.
SHIFTS = ((22, 31, 3), (7, 16, 7), (10, 19, 6), (13, 22, 6))


def make_trace(seed: int, sc: Scenario) -> tuple[list[Arrival], list[AgentSpec]]:
    """Arrivals and agent timelines, drawn once and shared by every policy."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    peak_rate = (sc.base_per_h + sc.peak_per_h) / 3600
    t = 0.0
    while True:  # thinning of a non-homogeneous Poisson process
        t += rng.expovariate(peak_rate)
        if t >= sc.days * DAY:
            break
        hour = (t % DAY) / 3600
        rate = sc.base_per_h + sc.peak_per_h * math.exp(
            -(((hour - sc.peak_hour) / sc.peak_sigma_h) ** 2) / 2
        )
        if rng.random() * (sc.base_per_h + sc.peak_per_h) > rate:
            continue
        index = len(arrivals)
        returning = (
            rng.randrange(max(index - 400, 0), index)
            if index and rng.random() < sc.returning_share
            else None
        )
        arrivals.append(
            Arrival(
                id=f"c{index}",
                t=t,
                skill="sales" if rng.random() < sc.sales_share else "support",
                priority=1 if rng.random() < sc.priority_share else 0,
                patience=rng.lognormvariate(math.log(sc.patience_mean_s) - 0.32, 0.8),
                handle_base=rng.lognormvariate(math.log(sc.handle_mean_s) - 0.18, 0.6),
                frt_jitter=rng.lognormvariate(0, 0.4),
                returning_of=returning,
                rating=rng.random() if rng.random() < 0.3 else None,
            )
        )
    agents = []
    shifts = [(start, end) for start, end, count in SHIFTS for _ in range(count)]
    for n, (start_h, end_h) in enumerate(shifts):
        roll = rng.random()
        skills = {"support"} if roll < 0.4 else {"sales"} if roll < 0.65 else {"support", "sales"}
        if start_h >= 22:  # the night shift is alone: it must serve both departments
            skills = {"support", "sales"}
        timeline: list[tuple[float, str]] = []
        for day in range(-1, sc.days + 1):
            start, end = day * DAY + start_h * 3600, day * DAY + end_h * 3600
            if end <= 0:
                continue
            timeline.append((max(start, 0.0), ONLINE))
            t = start + rng.expovariate(1 / sc.break_every_s)
            while t < end - 1800:
                back = t + rng.expovariate(1 / sc.break_mean_s)
                if t > 0:
                    timeline += [(t, AWAY), (back, ONLINE)]
                t = back + rng.expovariate(1 / sc.break_every_s)
            timeline.append((end, OFFLINE))
        agents.append(
            AgentSpec(
                id=f"a{n:02d}",
                speed=rng.uniform(0.6, 1.5),
                capacity=rng.choice((2, 3, 3, 4, 5)),
                skills=frozenset(skills),
                csat=rng.uniform(0.6, 0.95),
                timeline=tuple(sorted(timeline)),
            )
        )
    return arrivals, agents


@dataclass
class AgentState:
    spec: AgentSpec
    status: str = OFFLINE
    open: set[str] = field(default_factory=set)
    chats: int = 0
    since: float = 0.0
    online_s: float = 0.0
    load_area: float = 0.0  # integral of open / capacity while online
    open_area: float = 0.0  # integral of open while online
    pick_pending: bool = False


@dataclass
class ConvState:
    arrival: Arrival
    state: str = "waiting"  # waiting | assigned | answered | abandoned | done
    agent: str | None = None
    assigned_at: float | None = None
    answered_at: float | None = None
    eta: float | None = None


class World:
    """One policy's run over the trace; it is also the engine's routing source."""

    def __init__(self, trace, policy: str, kernel, sc: Scenario, seed: int) -> None:
        arrivals, specs = trace
        self.sc, self.now = sc, 0.0
        self.arrivals = arrivals
        self.staff = {s.id: AgentState(s) for s in specs}
        self.convs: dict[str, ConvState] = {}
        self.stats = AgentStats()
        self.engine = build_engine(kernel, self, policy=policy, clock=lambda: self.now)
        self.heap: list = []
        self.seq = itertools.count()
        self.pick_rng = random.Random(seed * 7919 + 1)
        self.finished = 0

    def at(self, t: float, kind: str, key: str) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, key))

    # -- the routing source -----------------------------------------------------------
    async def agents(self, site_id: str) -> list[AgentSnapshot]:
        return [
            self.stats.fill(
                AgentSnapshot(
                    id=a.spec.id,
                    site_id=SITE,
                    status=a.status,
                    capacity=a.spec.capacity,
                    open_count=len(a.open),
                    skills=a.spec.skills,
                )
            )
            for a in self.staff.values()
        ]

    async def claim(self, conversation: ConversationSnapshot, agent: AgentSnapshot) -> Claim:
        conv, state = self.convs[conversation.id], self.staff[agent.id]
        if conv.state != "waiting":
            return Claim.GONE
        if state.status != ONLINE:
            return Claim.AGENT_UNAVAILABLE
        if len(state.open) >= state.spec.capacity:
            return Claim.AGENT_FULL
        self._account(state)
        state.open.add(conv.arrival.id)
        state.chats += 1
        self.stats.assigned(SITE, state.spec.id, self.now)
        conv.state, conv.agent, conv.assigned_at = "assigned", state.spec.id, self.now
        others = len(state.open) - 1
        speed, a = state.spec.speed, conv.arrival
        frt = (self.sc.frt_base_s + self.sc.frt_per_open_s * others) / speed * a.frt_jitter
        handle = a.handle_base * (1 + self.sc.concurrency_slowdown * others) / speed
        if self._previous_agent(a) == state.spec.id:
            handle *= self.sc.returning_speedup
        self.at(self.now + frt, "answer", a.id)
        self.at(self.now + max(handle, frt + 1), "end", a.id)
        return Claim.CLAIMED

    # -- the world ----------------------------------------------------------------------
    def _previous_agent(self, arrival: Arrival) -> str | None:
        if arrival.returning_of is None:
            return None
        earlier = self.convs.get(self.arrivals[arrival.returning_of].id)
        return earlier.agent if earlier else None

    def _account(self, agent: AgentState) -> None:
        if agent.status == ONLINE:
            span = self.now - agent.since
            agent.online_s += span
            agent.load_area += span * len(agent.open) / agent.spec.capacity
            agent.open_area += span * len(agent.open)
        agent.since = self.now

    def _free(self, conv: ConvState) -> None:
        agent = self.staff[conv.agent]
        self._account(agent)
        agent.open.discard(conv.arrival.id)
        self.engine.observe_handled(SITE, conv.arrival.skill, self.now - conv.assigned_at)

    async def _route(self) -> None:
        await self.engine.drain(SITE)
        if not self.engine.policy.assigns:
            self._schedule_picks()

    def _schedule_picks(self) -> None:
        if not len(self.engine.queue(SITE)):
            return
        for agent in self.staff.values():
            spare = agent.status == ONLINE and len(agent.open) < agent.spec.capacity
            if spare and not agent.pick_pending:
                agent.pick_pending = True
                delay = self.pick_rng.expovariate(1 / self.sc.pick_delay_mean_s)
                self.at(self.now + delay, "pick", agent.spec.id)

    async def run(self) -> dict:
        for a in self.arrivals:
            self.at(a.t, "arrive", a.id)
            self.at(a.t + a.patience, "patience", a.id)
        for spec in self.staff.values():
            for t, status in spec.spec.timeline:
                self.at(t, "status:" + status, spec.spec.id)
        while self.heap and self.finished < len(self.arrivals):
            self.now, _, kind, key = heapq.heappop(self.heap)
            await self._handle(kind, key)
        return self.metrics()

    async def _handle(self, kind: str, key: str) -> None:
        if kind == "arrive":
            await self._arrive(key)
        elif kind == "patience":
            conv = self.convs[key]
            if conv.state in ("waiting", "assigned"):
                if conv.state == "waiting":
                    self.engine.withdraw(SITE, key)
                else:
                    self._free(conv)
                conv.state = "abandoned"
                self.finished += 1
                await self._route()
        elif kind == "answer":
            conv = self.convs[key]
            if conv.state == "assigned":
                conv.state, conv.answered_at = "answered", self.now
                self.stats.responded(SITE, conv.agent, self.now - conv.assigned_at)
        elif kind == "end":
            conv = self.convs[key]
            if conv.state == "answered":
                conv.state = "done"
                self.finished += 1
                self._free(conv)
                spec = self.staff[conv.agent].spec
                if conv.arrival.rating is not None:
                    self.stats.rated(SITE, spec.id, 1.0 if conv.arrival.rating < spec.csat else 0.0)
                await self._route()
        elif kind == "pick":
            agent = self.staff[key]
            agent.pick_pending = False
            if await self.engine.pick(SITE, key):
                self._schedule_picks()
        else:
            agent = self.staff[key]
            self._account(agent)
            agent.status = kind.split(":", 1)[1]
            if agent.status == ONLINE:
                await self._route()

    async def _arrive(self, key: str) -> None:
        a = self.arrivals[int(key[1:])]
        conv = self.convs[key] = ConvState(a)
        self.engine.enqueue(
            ConversationSnapshot(
                id=a.id,
                site_id=SITE,
                skill=a.skill,
                priority=a.priority,
                queued_at=a.t,
                previous_agent_id=self._previous_agent(a),
            )
        )
        await self._route()
        if conv.state == "waiting":
            status = await self.engine.status(SITE, [a.id])
            conv.eta = status[a.id].eta_s if a.id in status else None

    def metrics(self) -> dict:
        for agent in self.staff.values():
            self._account(agent)
        convs = list(self.convs.values())
        answered = [c for c in convs if c.answered_at is not None]
        waits = sorted(c.answered_at - c.arrival.t for c in answered)
        queued = sorted(c.assigned_at - c.arrival.t for c in convs if c.assigned_at is not None)
        worked = [a for a in self.staff.values() if a.online_s > 0]
        loads = [a.load_area / a.online_s for a in worked]
        opens = [a.open_area / a.online_s for a in worked]
        total = sum(a.chats for a in self.staff.values()) or 1
        errors = [
            abs(c.eta - (c.assigned_at - c.arrival.t))
            for c in convs
            if c.eta is not None and c.assigned_at is not None
        ]
        return {
            "conversations": len(convs),
            "p50_wait_s": round(percentile(waits, 50), 1),
            "p95_wait_s": round(percentile(waits, 95), 1),
            "p95_queue_wait_s": round(percentile(queued, 95), 1),
            "abandon_rate": round(sum(c.state == "abandoned" for c in convs) / len(convs), 4),
            "max_mean_load_ratio": round(max(loads) / statistics.fmean(loads), 4),
            "max_mean_open_ratio": round(max(opens) / statistics.fmean(opens), 3),
            "eta_mae_s": round(statistics.fmean(errors), 1) if errors else None,
            "share_per_agent": {a.spec.id: round(a.chats / total, 4) for a in self.staff.values()},
        }


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    rank = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return values[rank]


def simulate(seed: int, sc: Scenario, policies=POLICIES, weights: dict | None = None) -> dict:
    """Run every policy on one trace; ``weights`` override ``[routing.weights]``."""
    environ = {f"KEFU_ROUTING__WEIGHTS__{k.upper()}": str(v) for k, v in (weights or {}).items()}
    kernel = load_kernel(
        None, environ=environ, defaults=("kefu.plugins.routing",), entry_points=False
    )
    trace = make_trace(seed, sc)
    return {name: asyncio.run(World(trace, name, kernel, sc, seed).run()) for name in policies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=int, default=Scenario.days)
    parser.add_argument("--json", action="store_true", help="one JSON object keyed by policy")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--weights", default="", help="factor=weight,... (overrides defaults)")
    args = parser.parse_args(argv)
    weights = dict(kv.split("=") for kv in args.weights.split(",") if kv)
    started = time.perf_counter()
    sc = Scenario(days=args.days)
    results = simulate(args.seed, sc, args.policies.split(","), weights)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"seed {args.seed}, {args.days} day(s), {next(iter(results.values()))['conversations']}"
        f" conversations, {time.perf_counter() - started:.1f} s"
    )
    head = (
        "policy",
        "p50 wait",
        "p95 wait",
        "p95 queue",
        "abandon",
        "max/mean load",
        "max/mean open",
        "eta MAE",
        "chat share min..max",
    )
    print("  ".join(f"{h:>13}" for h in head))
    for name, r in results.items():
        shares = list(r["share_per_agent"].values())
        row = (
            name,
            f"{r['p50_wait_s']:.0f} s",
            f"{r['p95_wait_s']:.0f} s",
            f"{r['p95_queue_wait_s']:.0f} s",
            f"{r['abandon_rate']:.1%}",
            f"{r['max_mean_load_ratio']:.4f}",
            f"{r['max_mean_open_ratio']:.2f}",
            "-" if r["eta_mae_s"] is None else f"{r['eta_mae_s']:.0f} s",
            f"{min(shares):.1%}..{max(shares):.1%}",
        )
        print("  ".join(f"{c:>13}" for c in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

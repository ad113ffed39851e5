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
    .venv/bin/python tests/bench/routing_sim.py --scale    # cost at 5,000 waiting x 250 agents

``--scale`` measures what routing costs a live server instead (:func:`scale`): the
real routing plugin on SQLite, 250 agents all busy and 5,000 conversations waiting,
then the time and CPU of a new arrival, a freed slot, a presence change, the sweep,
a restart's first pass and a capacity raise that lets all 5,000 in.

Wait = arrival to the agent's first reply (what the visitor feels); its
percentiles are over answered conversations. Load = an agent's open
conversations divided by their capacity, averaged over the time they were
online; ``max_mean_load_ratio`` = the busiest agent's load / the team's mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kefu.core.domain import ASSIGNED, QUEUED, RESOLVED, Agent, Conversation, Site
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


# -- the cost of routing on a live server -------------------------------------------------
RAISED = "capacity raised: each assignment"
SCALE_PLUGINS = (
    "kefu.plugins.storage_sql",
    "kefu.plugins.bus_memory",
    "kefu.plugins.gateway",
    "kefu.plugins.routing",
)


async def _running_kernel(data_dir: Path, routing: str):
    """A kernel with SQLite storage and the routing plugin, started (no HTTP socket)."""
    from aiohttp import web

    from kefu.core.web_app import create_app

    path = data_dir / "kefu.toml"
    path.write_text(
        f'[server]\ndata_dir = "{data_dir}"\nreload = false\n'
        f'[storage]\nbackend = "sql"\n[routing]\n{routing}',
        encoding="utf-8",
    )
    kernel = load_kernel(path, environ={}, defaults=SCALE_PLUGINS, entry_points=False)
    runner = web.AppRunner(create_app(kernel))
    await runner.setup()
    return kernel, runner


class Clock:
    """Wall time and CPU time of a block, and the longest event-loop stall meanwhile (a
    probe wakes every 10 ms; its own CPU, measured idle first, is taken off)."""

    PERIOD = 0.01
    probe_cpu_per_s = 0.0

    def __init__(self) -> None:
        self.stall = 0.0
        self._ticker: asyncio.Task | None = None

    @classmethod
    async def calibrate(cls) -> None:
        with Clock() as idle:
            await asyncio.sleep(1.0)
        cls.probe_cpu_per_s = idle.cpu / idle.wall

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.PERIOD)
            self.stall = max(self.stall, time.perf_counter() - before - self.PERIOD)

    def __enter__(self) -> Clock:
        self.wall, self.cpu, self.stall = time.perf_counter(), time.process_time(), 0.0
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = max(time.process_time() - self.cpu - self.probe_cpu_per_s * self.wall, 0.0)
        self._ticker.cancel()


class Results(dict):
    """Rows by name, printed as they come when ``show`` (a long run keeps what it has)."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show

    def __setitem__(self, name: str, row: dict) -> None:
        super().__setitem__(name, row)
        if self.show:
            print(
                f"{name:44}{row['wall_ms_each']:>8} ms{row['cpu_ms_each']:>8} ms"
                f"{row['max_loop_stall_ms']:>8} ms{row['wall_s']:>8} s",
                flush=True,
            )


async def scale(
    waiting: int, agents: int, capacity: int, repeat: int, limit_s: float, show: bool = False
) -> dict:
    """Routing's cost at ``waiting`` conversations in line and ``agents`` busy agents; the
    capacity raise is given ``limit_s`` at most (what was assigned by then is counted)."""
    from kefu.plugins.routing import service_of

    routing = "sweep_interval_s = 0\nanswer_timeout_s = 600\n"
    results = Results(show)
    await Clock.calibrate()
    with tempfile.TemporaryDirectory(prefix="kefu-routing-scale-") as tmp:
        data = Path(tmp)
        kernel, runner = await _running_kernel(data, routing)
        storage, site = kernel.storage, "scale"
        await storage.create_site(Site(id=site, name="Scale", widget_key="scale"))
        for n in range(agents):
            agent = Agent(f"a{n:03d}", site, f"a{n}@x", f"A{n}", "-", capacity=capacity)
            agent.status = "online"
            await storage.create_agent(agent)
        now = time.time()
        for n in range(agents * capacity):
            c = Conversation(f"h{n:05d}", site, f"hv{n}", state=ASSIGNED)
            c.assignee_id, c.meta = f"a{n % agents:03d}", {"assigned_at": now, "assigned_seq": 0}
            await storage.create_conversation(c)
        for n in range(waiting):
            await storage.create_conversation(
                Conversation(f"w{n:05d}", site, f"wv{n}", state=QUEUED, meta={"queued_at": n})
            )
        service = service_of(kernel)
        await service.settle()
        await runner.cleanup()  # a restart: the first pass finds all of it in storage

        kernel, runner = await _running_kernel(data, routing)
        storage, service = kernel.storage, service_of(kernel)
        with Clock() as clock:
            service.kick(site)
            await service.settle()
        results["first pass after a restart"] = _row(clock, 1)

        async def arrival(n: int) -> None:
            c = Conversation(f"x{n:05d}", site, f"xv{n}", state=QUEUED)
            await storage.create_conversation(c)
            await kernel.emit("conversation.queued", site, conversation_id=c.id)
            await service.settle()

        with Clock() as clock:
            for n in range(repeat):
                await arrival(n)
        results["a conversation arrives, nobody is free"] = _row(clock, repeat)

        held = await storage.list_conversations(site, state=ASSIGNED, limit=repeat)
        with Clock() as clock:
            for c in held:
                c.state, c.resolved_at = RESOLVED, time.time()
                await storage.update_conversation(c, if_state=ASSIGNED)
                await kernel.emit("conversation.resolved", site, conversation_id=c.id)
                await service.settle()
        results["a slot frees: one assignment"] = _row(clock, len(held))

        with Clock() as clock:
            for n in range(repeat):
                for status in ("away", "online"):
                    agent_id = f"a{n % agents:03d}"
                    await kernel.emit("agent.presence", site, agent_id=agent_id, status=status)
                    await service.settle()
        results["an agent goes away, comes back"] = _row(clock, 2 * repeat)

        await runner.cleanup()
        kernel, runner = await _running_kernel(data, "sweep_interval_s = 0.1\n")
        storage, service = kernel.storage, service_of(kernel)
        service.kick(site)
        await service.settle()
        with Clock() as clock:
            await asyncio.sleep(2.0)  # 20 sweeps, idle
        results["20 sweeps, idle (0.1 s apart)"] = _row(clock, 20)

        before = len(await storage.list_conversations(site, state=ASSIGNED, limit=100_000))
        with Clock() as clock:
            for agent in await storage.list_agents(site):
                agent.capacity = capacity + 1 + waiting // agents
                await storage.update_agent(agent)
                await kernel.emit("agent.capacity_changed", site, agent_id=agent.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.settle(), limit_s)
        left = await storage.list_conversations(site, state=QUEUED, limit=100_000)
        assigned = await storage.list_conversations(site, state=ASSIGNED, limit=100_000)
        row = _row(clock, len(assigned) - before)
        row["still_waiting"] = len(left)
        results[RAISED] = row
        await runner.cleanup()
    return results


def _row(clock: Clock, count: int) -> dict:
    return {
        "count": count,
        "wall_ms_each": round(clock.wall * 1000 / max(count, 1), 2),
        "cpu_ms_each": round(clock.cpu * 1000 / max(count, 1), 2),
        "max_loop_stall_ms": round(clock.stall * 1000, 1),
        "wall_s": round(clock.wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="the live cost at scale instead")
    parser.add_argument("--waiting", type=int, default=5_000, help="--scale: conversations")
    parser.add_argument("--agents", type=int, default=250, help="--scale: busy agents")
    parser.add_argument("--capacity", type=int, default=4, help="--scale: slots per agent")
    parser.add_argument("--repeat", type=int, default=20, help="--scale: each measure")
    parser.add_argument(
        "--limit", type=float, default=300.0, help="--scale: seconds for the capacity raise"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=int, default=Scenario.days)
    parser.add_argument("--json", action="store_true", help="one JSON object keyed by policy")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--weights", default="", help="factor=weight,... (overrides defaults)")
    args = parser.parse_args(argv)
    if args.scale:
        if not args.json:
            print(f"{args.waiting:,} waiting x {args.agents} agents ({args.capacity} each), SQLite")
            print(f"{'':44}{'wall/op':>10}{'CPU/op':>10}{'max stall':>11}{'total':>9}")
        shape = (args.waiting, args.agents, args.capacity, args.repeat, args.limit)
        found = asyncio.run(scale(*shape, show=not args.json))
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print(f"still waiting after the capacity raise: {found[RAISED]['still_waiting']:,}")
        return 0
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

"""A load-client process: many participants on one event loop, driven over a pipe.

The driver (:mod:`tests.bench.scenarios`) starts several of these with multiprocessing
(each may hold up to the per-process file-descriptor limit) and sends commands; each
command runs as a task, so a storm can be ordered while a load phase is running. An
agent and the visitors whose conversations it holds live in the same process, which
lets the process check on its own that every acknowledged message reached the other
side.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from tests.bench.client import Dialer, Participant, Stats
from tests.bench.overload_client import FloodCommands
from tests.bench.servers import raise_nofile

log = logging.getLogger(__name__)

CONNECT_CONCURRENCY = 48  # connection attempts in flight per process
SOURCES_PER_WORKER = 8


def source_addresses(index: int, count: int = SOURCES_PER_WORKER) -> list[str]:
    """Loopback addresses this worker binds to: 127.<20+index>.0.1, .2, ..."""
    return [f"127.{20 + index}.{k // 250}.{k % 250 + 1}" for k in range(count)]


class Channel:
    """Pickled messages over a multiprocessing pipe, awaited on the running loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def recv(self) -> Any:
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        while not self.conn.poll():
            ready = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        os.set_blocking(fd, True)  # the loop made it non-blocking; a message may be large
        return self.conn.recv()

    def send(self, message: Any) -> None:
        os.set_blocking(self.conn.fileno(), True)
        self.conn.send(message)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def bounded(items: list, action: Any, limit: int = CONNECT_CONCURRENCY) -> list:
    """``action(item)`` for every item with at most ``limit`` in flight; exceptions returned."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Any) -> Any:
        async with gate:
            try:
                return await action(item)
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(item) for item in items))


class Worker(FloodCommands):
    """The participants of one process and the commands the driver may give."""

    def __init__(self, index: int, channel: Channel) -> None:
        self.index = index
        self.channel = channel
        self.stats = Stats()
        self.dialers: dict[str, Dialer] = {}
        self.visitors: list[Participant] = []
        self.agents: list[Participant] = []
        self.owner: dict[str, Participant] = {}  # conversation -> its agent
        self.visitor_of: dict[str, Participant] = {}  # conversation -> its visitor
        self.tags = itertools.count()
        self.routed = False  # agents hold what routing gave them (the kill scenario)

    async def serve(self) -> None:
        tasks: set[asyncio.Task] = set()
        while True:
            ident, command, args = await self.channel.recv()
            if command == "exit":
                break
            task = asyncio.ensure_future(self._run(ident, command, args))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for participant in self.visitors + self.agents:
            participant.closing = True
        for dialer in self.dialers.values():
            await dialer.close()

    async def _run(self, ident: int, command: str, args: dict) -> None:
        try:
            result = await getattr(self, f"cmd_{command}")(**args)
            self.channel.send((ident, True, result))
        except Exception:
            self.channel.send((ident, False, traceback.format_exc()))

    def _dialer(self, base: str, transport: str, jitter: float) -> Dialer:
        key = f"{transport} {base}"
        if key not in self.dialers:
            self.dialers[key] = Dialer(
                base, transport, source_addresses(self.index), self.stats, jitter
            )
        return self.dialers[key]

    def _participant(self, kind: str, ident: str, token: str, dialer: Dialer) -> Participant:
        return Participant(kind, ident, token, f"w{self.index}.{next(self.tags)}", dialer)

    # -- commands ---------------------------------------------------------------------
    async def cmd_open_idle(self, base: str, tokens: list[tuple[str, str]]) -> dict:
        """Open one WebSocket per visitor token as fast as allowed; no conversation."""
        dialer = self._dialer(base, "ws", 1.0)
        people = [self._participant("visitor", i, t, dialer) for i, t in tokens]
        times: list[float] = []

        async def connect(p: Participant) -> None:
            started = time.monotonic()
            await p.connect()
            times.append(time.monotonic() - started)

        first = time.time()
        results = await bounded(people, connect)
        last = time.time()
        failed = [r for r in results if isinstance(r, Exception)]
        self.visitors += [p for p, r in zip(people, results, strict=True) if r is None]
        return {
            "opened": len(people) - len(failed),
            "failed": len(failed),
            "failures": sorted({type(e).__name__ for e in failed}),
            "first": first,
            "last": last,
            "connect_s": times,
        }

    async def cmd_open_chat(
        self,
        base: str,
        transport: str,
        visitors: list[tuple[str, str]],
        agents: list[tuple[str, str, list[int]]],
        jitter: float = 1.0,
    ) -> dict:
        """Visitors connect and start their conversation, then their agents connect and watch.

        Agents come second so that they are not sent a notice for every conversation
        started during set-up (each agent connection receives them all).
        """
        dialer = self._dialer(base, transport, jitter)
        people = [self._participant("visitor", i, t, dialer) for i, t in visitors]
        results = await bounded(people, _join)
        failed = [r for r in results if isinstance(r, Exception)]
        ready = [p for p, r in zip(people, results, strict=True) if not isinstance(r, Exception)]
        self.visitors += ready
        for p, r in zip(people, results, strict=True):
            if isinstance(r, str):
                self.visitor_of[r] = p
        crew = [self._participant("agent", i, t, dialer) for i, t, _ in agents]

        async def staff(pair: tuple[Participant, list[int]]) -> None:
            agent, held = pair
            await agent.connect()
            for n, k in enumerate(held):
                if isinstance(results[k], str):
                    await agent.watch(results[k])
                    self.owner[results[k]] = agent
                if n % 15 == 14:
                    await asyncio.sleep(0.8)  # stay under the gateway's per-connection rate

        staffed = await bounded(list(zip(crew, [a[2] for a in agents], strict=True)), staff)
        failed += [r for r in staffed if isinstance(r, Exception)]
        self.agents += [a for a, r in zip(crew, staffed, strict=True) if r is None]
        return {
            "visitors": len(ready),
            "agents": len(self.agents),
            "failed": len(failed),
            "failures": sorted({repr(e)[:120] for e in failed}),
        }

    async def cmd_load(
        self, rate: float, duration: float, seed: int = 0, grace: float = 10.0
    ) -> dict:
        """Open-loop sends at ``rate`` per second (Poisson arrivals) for ``duration`` seconds.

        Each arrival picks a random participant holding a conversation; the send goes out
        whether or not earlier ones were acknowledged. Then up to ``grace`` seconds for the
        window's acks and deliveries to arrive. Returns the samples of the window.
        """
        senders = [p for p in self.visitors + self.agents if p.convs]
        stats = self.stats
        stats.reset()
        opened = time.time()
        stats.window = (opened, float("inf"))
        rnd = random.Random(seed * 1000 + self.index)
        start = time.monotonic()
        due, end = start, start + duration
        sleep = asyncio.sleep
        try:
            while senders:
                due += rnd.expovariate(rate)
                if due >= end:
                    break
                delay = due - time.monotonic()
                if delay > 0.0005:
                    await sleep(delay)
                stats.lag.append(time.monotonic() - due)
                await senders[rnd.randrange(len(senders))].send_message()
            await sleep(max(0.0, end - time.monotonic()))
        finally:
            stats.window = (opened, time.time())
        settle = time.monotonic() + grace
        everyone = self.visitors + self.agents
        while time.monotonic() < settle:
            if not any(p.pending for p in everyone) and not self._behind():
                break
            await sleep(0.1)
        result = stats.export()
        result["late"] = sum(len(p.pending) for p in everyone)
        return result

    async def cmd_drain(self, wait_s: float, stall_s: float = 20.0) -> dict:
        """Wait until every send is acknowledged and both sides hold every acked message.

        Gives up after ``wait_s`` seconds, or ``stall_s`` seconds without progress (an
        overloaded server catching up keeps making progress, a lost message does not).
        """
        started = time.monotonic()
        deadline, stalled = started + wait_s, started + stall_s
        everyone = self.visitors + self.agents
        best = None
        while time.monotonic() < min(deadline, stalled):
            left = sum(len(p.pending) for p in everyone) + self._behind()
            if not left:
                break
            if best is None or left < best:
                best, stalled = left, time.monotonic() + stall_s
            for p in everyone:  # no ack for 10 s: "maybe stored", re-send with the same cid
                p.resend(older_than=time.time() - 10.0, most=4)
            await asyncio.sleep(0.25)
        return {
            "pending": sum(len(p.pending) for p in everyone),
            "behind": self._behind(),
            "drain_s": round(time.monotonic() - started, 1),
        }

    def _behind(self) -> int:
        """Acknowledged messages one side of their conversation has not received yet."""
        if self.routed:
            self._route_owners()
        missing = 0
        for conversation_id, visitor in self.visitor_of.items():
            sides = [c for c in (visitor, self.owner.get(conversation_id)) if c is not None]
            convs = [p.convs.get(conversation_id) for p in sides]
            top = max((c.top for c in convs if c is not None), default=0)
            missing += sum(max(0, top - (c.last_seq if c else 0)) for c in convs)
        return missing

    async def cmd_storm(self, at: float, fraction: float, wait_s: float) -> dict:
        """At wall time ``at`` cut ``fraction`` of the visitors' links at once; time the resumes."""
        victims = self.visitors[: round(len(self.visitors) * fraction)]
        await asyncio.sleep(max(0.0, at - time.time()))
        cut = time.monotonic()
        for p in victims:
            p.drop()
        deadline = cut + wait_s
        while time.monotonic() < deadline:
            if all(p.resumed_at > cut for p in victims):
                break
            await asyncio.sleep(0.05)
        resumed = [p.resumed_at - cut for p in victims if p.resumed_at > cut]
        return {"dropped": len(victims), "resumed": len(resumed), "resume_s": resumed}

    async def cmd_held(self) -> dict:
        """Visitors whose link is up now, and the closes and reconnects counted so far."""
        return {
            "held": sum(1 for p in self.visitors if p.link is not None),
            "closes": dict(self.stats.closes),
            "reconnects": self.stats.reconnects,
        }

    async def cmd_addresses(self) -> dict:
        """Each participant's socket address, ``None`` when not on a WebSocket (for placement)."""

        def of(p: Participant) -> tuple[str, int] | None:
            address = getattr(p.link, "address", None)
            return address() if address is not None else None

        return {
            "visitors": [of(p) for p in self.visitors],
            "agents": [of(p) for p in self.agents],
        }

    async def cmd_placement(self, visitors: list[int | None], agents: list[int | None]) -> dict:
        """Mark each conversation cross-worker or not from the server worker of each side
        (lists parallel to :meth:`cmd_addresses`' answer, as the driver found them)."""
        worker_of = {id(p): w for p, w in zip(self.visitors, visitors, strict=False)}
        worker_of.update({id(p): w for p, w in zip(self.agents, agents, strict=False)})
        counts = {"cross": 0, "same": 0, "unknown": 0}
        for conversation_id, visitor in self.visitor_of.items():
            agent = self.owner.get(conversation_id)
            v, a = worker_of.get(id(visitor)), worker_of.get(id(agent)) if agent else None
            cross = None if v is None or a is None else v != a
            counts["unknown" if cross is None else "cross" if cross else "same"] += 1
            for side in (visitor, agent):
                conv = side.convs.get(conversation_id) if side is not None else None
                if conv is not None:
                    conv.cross = cross
        return counts

    async def cmd_records(self) -> dict:
        """Per conversation: acknowledged (cid, seq) pairs and how far each side got."""
        conversations: dict[str, dict] = {}
        for p in self.visitors + self.agents:
            for cid, (conversation_id, seq) in p.acked.items():
                entry = conversations.setdefault(conversation_id, {"acked": {}, "last": {}})
                entry["acked"][cid] = seq
        if self.routed:
            self._route_owners()
        for p in self.visitors + self.agents:
            for conversation_id, conv in p.convs.items():
                if p.kind == "agent" and self.owner.get(conversation_id, p) is not p:
                    continue  # an agent it was taken from (reassigned) stopped receiving it
                entry = conversations.setdefault(conversation_id, {"acked": {}, "last": {}})
                entry["last"][p.kind] = conv.last_seq
        everyone = self.visitors + self.agents
        unacked = sum(len(p.pending) for p in everyone)
        away = sum(1 for p in everyone if p.link is None)
        return {
            "conversations": conversations,
            "unacked": unacked,
            "behind": self._behind(),
            "disconnected": away,
        }

    # -- routed population and the kill scenario ----------------------------------------------
    def _route_owners(self) -> None:
        """Each conversation's agent: the one of this process told of it last."""
        for agent in self.agents:
            for conversation_id, told in agent.assigned.items():
                current = self.owner.get(conversation_id)
                if current is None or current.assigned.get(conversation_id, 0.0) < told:
                    self.owner[conversation_id] = agent

    def _untold(self, since: float) -> list[str]:
        """This process's visitors' conversations no agent here was told of after ``since``."""
        told = {c for a in self.agents for c, t in a.assigned.items() if t > since}
        return [c for c in self.visitor_of if c not in told]

    async def cmd_open_routed(
        self,
        base: str,
        department: str,
        visitors: list[tuple[str, str]],
        agents: list[tuple[str, str]],
        wait_s: float,
        jitter: float = 1.0,
    ) -> dict:
        """Visitors start in ``department``; then its agents (that skill, this process's
        only) connect and go online, and routing gives them the conversations.

        Waits up to ``wait_s`` until an agent here was told of every conversation (an
        ``assignment`` frame); each agent then writes to what it was given.
        """
        self.routed = True
        dialer = self._dialer(base, "ws", jitter)
        people = [self._participant("visitor", i, t, dialer) for i, t in visitors]
        for p in people:
            p.department = department
        results = await bounded(people, _join)
        failed = [r for r in results if isinstance(r, Exception)]
        for p, r in zip(people, results, strict=True):
            if isinstance(r, str):
                self.visitors.append(p)
                self.visitor_of[r] = p
        crew = [self._participant("agent", i, t, dialer) for i, t in agents]

        async def staff(agent: Participant) -> None:
            await agent.connect()
            reply = await agent.request({"op": "presence", "status": "online"})
            if reply["op"] != "presence_ok":
                raise RuntimeError(f"presence refused: {reply}")

        started = time.monotonic()
        staffed = await bounded(crew, staff)
        failed += [r for r in staffed if isinstance(r, Exception)]
        self.agents += [a for a, r in zip(crew, staffed, strict=True) if r is None]
        deadline = started + wait_s
        while time.monotonic() < deadline:
            if not self._untold(0.0):
                break
            await asyncio.sleep(0.05)
        self._route_owners()
        return {
            "visitors": len(self.visitor_of),
            "agents": len(self.agents),
            "failed": len(failed),
            "failures": sorted({repr(e)[:120] for e in failed}),
            "unassigned": len(self._untold(0.0)),
            "assigned_s": round(time.monotonic() - started, 2),
        }

    async def cmd_kill_arm(self, away_fraction: float) -> dict:
        """Keep the last ``away_fraction`` of this process's agents away after the next
        drop, until :meth:`cmd_kill_release`."""
        away = self.agents[len(self.agents) - round(len(self.agents) * away_fraction) :]
        for agent in away:
            agent.gate = asyncio.Event()
        return {"away": len(away), "ids": [a.ident for a in away]}

    async def cmd_kill_resumed(self, cut: float, ready: float, wait_s: float) -> dict:
        """Wait until every client not kept away reconnected and resumed after the cut
        (wall time ``cut``); seconds from ``ready`` (the server listening again) to each."""
        offset = time.time() - time.monotonic()  # wall = monotonic + offset
        back = [p for p in self.visitors + self.agents if p.gate is None]
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if all(p.resumed_at + offset > cut for p in back):
                break
            await asyncio.sleep(0.05)
        done = [p for p in back if p.resumed_at + offset > cut]
        return {
            "clients": len(back),
            "resumed": len(done),
            "resume_s": [p.resumed_at + offset - ready for p in done],
            "dropped": sum(1 for p in back if p.dropped_at + offset > cut),
        }

    async def cmd_kill_late(self, base: str, department: str, visitors: list) -> dict:
        """New visitors (the server just restarted) start a conversation and write once."""
        dialer = self._dialer(base, "ws", 1.0)
        people = [self._participant("visitor", i, t, dialer) for i, t in visitors]
        for p in people:
            p.department = department

        async def join(p: Participant) -> str:
            for attempt in range(5):
                try:
                    await p.connect()
                    conversation_id = await p.start()
                    break
                except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                    link, p.link = p.link, None
                    if link is not None:
                        link.abort()
                    if attempt == 4:
                        raise RuntimeError(f"late visitor could not start: {exc!r}") from exc
                    await asyncio.sleep(0.5)
            self.visitors.append(p)
            self.visitor_of[conversation_id] = p
            await p.send_message()
            return conversation_id

        results = await bounded(people, join)
        failed = [r for r in results if isinstance(r, Exception)]
        return {
            "started": len(people) - len(failed),
            "failed": len(failed),
            "failures": sorted({repr(e)[:120] for e in failed}),
        }

    async def cmd_kill_release(self, cut: float, wait_s: float) -> dict:
        """Let the agents kept away reconnect; wait until they resumed and an agent here
        was told (after the cut) of every conversation of this process's visitors."""
        offset = time.time() - time.monotonic()
        away = [a for a in self.agents if a.gate is not None]
        released = time.time()
        for agent in away:
            assert agent.gate is not None
            agent.gate.set()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if all(a.resumed_at + offset > released for a in away) and not self._untold(cut):
                break
            await asyncio.sleep(0.05)
        for agent in away:
            agent.gate = None
        self._route_owners()
        return {
            "away": len(away),
            "released": released,
            "resume_s": [
                a.resumed_at + offset - released for a in away if a.resumed_at + offset > released
            ],
            "all_told_s": round(time.time() - released, 2),
            "untold": len(self._untold(cut)),
        }

    async def cmd_kill_told(self, since: float) -> dict:
        """``told``: ``{agent id: [conversations it was told of after since]}``;
        ``conversations``: those of this process's visitors."""
        return {
            "told": {
                a.ident: sorted(c for c, t in a.assigned.items() if t > since) for a in self.agents
            },
            "conversations": sorted(self.visitor_of),
        }

    async def cmd_close(self) -> dict:
        everyone, self.visitors, self.agents = self.visitors + self.agents, [], []
        self.routed = False
        self.owner.clear()
        self.visitor_of.clear()
        await bounded(everyone, Participant.close, 256)
        return {"closed": len(everyone)}


async def _join(p: Participant) -> str:
    """A visitor connects and starts (or gets) its conversation."""
    await p.connect()
    return await p.start()


def worker_main(conn: Connection, index: int) -> None:
    """Process entry point (multiprocessing target)."""
    logging.basicConfig(level=logging.WARNING)
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(Worker(index, Channel(conn)).serve())

"""Garbage-collector pauses with 15,000 connections held and messages flowing (issue 11).

    .venv/bin/python -m tests.bench.gc_bench                 # Python's defaults vs kefu's
    .venv/bin/python -m tests.bench.gc_bench --config tuned --thresholds 50000,20,100

Each configuration runs in a fresh process (the collector's state is per process): a
kernel with the default plugins is loaded and the start-up freeze done as
``core/web_app.py`` does, then, on an event loop (uvloop when importable, as ``kefu
run``), connections open at ``--ramp`` per second while ``--rate`` messages per second
make their garbage, and both go on for ``--seconds`` with ``--churn`` of the
connections replaced every second. A connection is the gateway's
``kefu.plugins.gateway.connection.Connection`` plus a stand-in for what the transport
holds (a handler task waiting on a future, request headers, a protocol and transport
pointing at each other); a message is a parsed frame, a ``Message``, an ``Event``, the
fan-out's frames, a short-lived reference cycle and a bounded history of recent
messages. ``gc.callbacks`` times every collection.

Reported per configuration: collections and the longest pause per generation, the
total time collecting, the freezes made, what a full collection costs at the end, and
what freezing left behind (reference cycles frozen alive that died later: found by
unfreezing and collecting once the run is over).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from kefu.core.config import ServerSettings
from kefu.core.domain import Message
from kefu.core.gc_tuning import GcFreezer, apply_thresholds, freeze_start_up
from kefu.core.types import Event, Principal
from kefu.plugins.gateway.connection import Connection

PYTHON_DEFAULTS = (700, 10, 10)
FRAME = orjson.dumps(
    {"op": "send", "conversation_id": "c-0", "cid": "x", "text": "hello, is anyone there?"}
)


class PauseRecorder:
    """Times every collection through ``gc.callbacks``: wall clock (what the loop waits)
    and the thread's CPU time (what the collector did, without the scheduler's share on
    a busy machine)."""

    def __init__(self) -> None:
        self.started = (0.0, 0.0)
        self.pauses: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}
        self.holding = False  # set once the connections are open
        self.hold_pauses: list[tuple[int, float, float]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = (time.perf_counter(), time.thread_time())
        else:
            wall, cpu = self.started
            pause = (time.perf_counter() - wall, time.thread_time() - cpu)
            self.pauses[info["generation"]].append(pause)
            if self.holding:
                self.hold_pauses.append((info["generation"], *pause))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["hold_max_ms"] = _ms(max((w for _, w, _ in self.hold_pauses), default=0.0))
        out["hold_max_cpu_ms"] = _ms(max((c for _, _, c in self.hold_pauses), default=0.0))
        out["hold_gen2_count"] = sum(1 for g, _, _ in self.hold_pauses if g == 2)
        for generation, pauses in self.pauses.items():
            out[f"gen{generation}_count"] = len(pauses)
            out[f"gen{generation}_max_ms"] = _ms(max((w for w, _ in pauses), default=0.0))
            out[f"gen{generation}_max_cpu_ms"] = _ms(max((c for _, c in pauses), default=0.0))
        every = [p for pauses in self.pauses.values() for p in pauses]
        out["max_ms"] = _ms(max((w for w, _ in every), default=0.0))
        out["max_cpu_ms"] = _ms(max((c for _, c in every), default=0.0))
        out["total_ms"] = _ms(sum(w for w, _ in every))
        out["total_cpu_ms"] = _ms(sum(c for _, c in every))
        return out


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


class Protocol:
    """Stands in for the transport's per-connection objects (aiohttp's protocol,
    transport, request, handler task), which point at each other."""

    def __init__(self, connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.headers = {f"x-header-{i}": f"value {i}" for i in range(12)}
        self.peer = ("127.0.0.1", random.randrange(1024, 65535))
        self.transport = Transport(self)
        self.closed = loop.create_future()
        self.task = loop.create_task(self.serve())

    async def serve(self) -> None:
        await self.closed

    def close(self) -> None:
        self.closed.set_result(None)
        self.transport = None  # as asyncio and aiohttp do on connection_lost


class Transport:
    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol  # a cycle, as asyncio's transports and protocols make
        self.buffer = bytearray()
        self.extra = {"peername": protocol.peer, "sockname": ("127.0.0.1", 8080)}


def open_connection(n: int, loop: asyncio.AbstractEventLoop) -> Protocol:
    principal = Principal("visitor", f"v-{n}", "site-1")
    connection = Connection(principal, "ws", remote="127.0.0.1")
    connection.watching.add(f"c-{n}")
    return Protocol(connection, loop)


def message_garbage(n: int, history: deque, cycle: bool) -> None:
    """What one message leaves behind, roughly, on the gateway's path."""
    frame = orjson.loads(FRAME)
    message = Message(
        "site-1", frame["conversation_id"], f"cid-{n}", "visitor", f"v-{n}", text=frame["text"]
    )
    message.seq = n
    event = Event("message.stored", "site-1", {"conversation_id": message.conversation_id})
    wire = orjson.dumps({"op": "message", "seq": n, "text": message.text, "ts": event.ts})
    frames = [(wire, False) for _ in range(2)]  # visitor and agent
    pending: dict[str, Any] = {"message": message, "frames": frames}
    if cycle:  # one that dies young, as a future and its callbacks or a traceback make
        pending["self"] = pending
    history.append((message, event))  # kept a while, then dropped


async def load(args: argparse.Namespace, recorder: PauseRecorder) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    freezer = GcFreezer()
    task = None
    if args.interval > 0:
        task = loop.create_task(freezer.run(args.interval))
    held: list[Protocol] = []
    history: deque = deque(maxlen=args.history)
    opened = messages = 0
    tick = 0.01
    began = time.perf_counter()
    ramp_s = args.connections / args.ramp
    end = ramp_s + args.seconds
    churned = 0.0
    while (now := time.perf_counter() - began) < end:
        due_connections = min(args.connections, int(now * args.ramp))
        while opened < due_connections:
            held.append(open_connection(opened, loop))
            opened += 1
        if now > ramp_s:  # hold: replace --churn of the connections per second
            recorder.holding = True
            churned += args.churn * args.connections * tick
            while churned >= 1:
                churned -= 1
                held.pop(random.randrange(len(held))).close()
                held.append(open_connection(opened, loop))
                opened += 1
        due_messages = int(now * args.rate)
        while messages < due_messages:
            message_garbage(messages, history, messages % args.cycle_every == 0)
            messages += 1
        await asyncio.sleep(tick)
    if task is not None:
        task.cancel()
    gc.callbacks.remove(recorder)
    tracked = len(gc.get_objects())
    started = time.thread_time()
    gc.collect()
    full_cpu_ms = (time.thread_time() - started) * 1e3
    for protocol in held:
        protocol.close()
    await asyncio.sleep(0)
    return {
        "connections": len(held),
        "opened": opened,
        "messages": messages,
        "freezes": freezer.freezes,
        "tracked_objects": tracked,
        "frozen_objects": gc.get_freeze_count(),
        "full_collection_at_end_cpu_ms": round(full_cpu_ms, 1),
        "_held": held,
    }


def stranded_by_freezing() -> tuple[int, int]:
    """Objects frozen alive that died in cycles since: (objects, memory blocks)."""
    gc.collect()
    blocks = sys.getallocatedblocks()
    gc.unfreeze()
    found = gc.collect()
    return found, blocks - sys.getallocatedblocks()


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    from kefu.core.kernel import load_kernel

    (name,) = args.config
    thresholds = tuple(args.thresholds) if name != "default" else PYTHON_DEFAULTS
    apply_thresholds(thresholds)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "kefu.toml"
        config.write_text(f'[server]\ndata_dir = "{tmp}/data"\n')
        kernel = load_kernel(config, environ={}, entry_points=False)  # start-up objects
        freeze_start_up()
        recorder = PauseRecorder()
        gc.callbacks.append(recorder)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        result = runner(load(args, recorder))
        per_connection = result.pop("_held")
        stranded, blocks = stranded_by_freezing()
        del per_connection, kernel
    return {
        "config": name,
        "thresholds": list(thresholds),
        "freeze_interval_s": args.interval,
        **result,
        **recorder.summary(),
        "stranded_objects": stranded,
        "stranded_blocks": blocks,
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("thresholds", lambda r: ", ".join(map(str, r["thresholds"]))),
        ("periodic freeze (s)", lambda r: r["freeze_interval_s"] or "off"),
        ("connections held / opened", lambda r: f"{r['connections']:,} / {r['opened']:,}"),
        ("messages", lambda r: f"{r['messages']:,}"),
        ("longest pause, wall (CPU) ms", lambda r: f"{r['max_ms']} ({r['max_cpu_ms']})"),
        ("longest pause holding, wall (CPU) ms",
         lambda r: f"{r['hold_max_ms']} ({r['hold_max_cpu_ms']})"),
        ("full collections while holding", lambda r: r["hold_gen2_count"]),
        *(
            (f"gen-{g} collections: count, longest wall (CPU) ms",
             lambda r, g=g: f"{r[f'gen{g}_count']}, {r[f'gen{g}_max_ms']} "
                            f"({r[f'gen{g}_max_cpu_ms']})")
            for g in (2, 1, 0)
        ),
        ("time collecting, wall (CPU) ms", lambda r: f"{r['total_ms']} ({r['total_cpu_ms']})"),
        ("freezes after start-up", lambda r: r["freezes"]),
        ("tracked / frozen objects at the end", lambda r: f"{r['tracked_objects']:,} / "
                                                          f"{r['frozen_objects']:,}"),
        ("a full collection at the end, CPU ms", lambda r: r["full_collection_at_end_cpu_ms"]),
        ("stranded by freezing (objects)", lambda r: f"{r['stranded_objects']:,}"),
    ]  # fmt: skip
    lines = ["| | " + " | ".join(r["config"] for r in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(str(cell(r)) for r in results) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=("default", "tuned"))
    parser.add_argument("--connections", type=int, default=15_000)
    parser.add_argument("--ramp", type=float, default=2_000.0, help="connections opened per s")
    parser.add_argument("--rate", type=float, default=2_000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="held after the ramp")
    parser.add_argument("--churn", type=float, default=0.002, help="share replaced per second")
    parser.add_argument("--history", type=int, default=5_000, help="recent messages kept")
    parser.add_argument("--cycle-every", type=int, default=4, help="a garbage cycle per N msgs")
    parser.add_argument(
        "--thresholds",
        type=lambda text: [int(part) for part in text.split(",")],
        default=list(defaults.gc_thresholds),
        help="tuned only (default: [server] gc_thresholds)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=defaults.gc_freeze_interval_s,
        help="tuned only: seconds between checks, 0 for none (default: [server] value)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    results = []
    for config in args.config or ["default", "tuned"]:
        child = [sys.executable, "-m", "tests.bench.gc_bench", "--one", "--config", config]
        child += [
            f"--{name.replace('_', '-')}={getattr(args, name)}"
            for name in (
                "connections",
                "ramp",
                "rate",
                "seconds",
                "churn",
                "history",
                "cycle_every",
            )
        ]
        child += ["--thresholds", ",".join(map(str, args.thresholds))]
        child += ["--interval", str(args.interval if config == "tuned" else 0)]
        print(f"running {config} ...", file=sys.stderr)
        done = subprocess.run(child, capture_output=True, text=True, env=os.environ, check=False)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.1f}; {args.connections:,} connections, "
        f"{args.rate:,.0f} msg/s, {args.seconds:.0f} s held"
    )
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

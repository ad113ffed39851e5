"""Storage benchmark: durable appends/s and CPU per append, resume reads, visitor upserts.

N concurrent writers (think: N visitors typing at once) each append messages
to their own conversation, one after another, on a fresh SQLite file or a fresh
PostgreSQL schema; an append counts when ``append_message`` returns, i.e. when it
is durable. CPU is this process's user + system time (every thread: the event
loop and the database driver's threads) divided by the operations done.
Run it (not part of ``make test``)::

    .venv/bin/python tests/bench/storage_bench.py --writers 64 --per-writer 40
    .venv/bin/python tests/bench/storage_bench.py --backend postgres --only group

Rows:

- ``group commit``: the writers above, ``batch_max`` 256 (the default);
- ``one commit per append``: the same with ``batch_max = 1``;
- ``one writer``: a single writer, one append at a time (the latency of an idle server);
- ``resume reads``: N concurrent readers each doing ``get_conversation`` then
  ``list_messages(after_seq=...)`` (what a resume costs the store);
- ``visitor upserts``: N concurrent ``upsert_visitor`` calls (``POST /v1/visitors/session``).

``--busy F`` keeps the event loop busy with pure-Python work a fraction F of the time
(1 ms runs) while a row is measured, as the gateway keeps it in a chat: a database
thread that needs the GIL back then waits for the loop to let go of it.

``--preload N`` stores N messages (in other conversations) before each row, so
that the lookups run against a table that is not empty.

The ratio of the first two rows is the point of group commit: without it every
append pays for its own commit (its own fsync with ``synchronous=full``).

``--plugin-dir DIR`` benchmarks the ``storage_sql`` package found in DIR instead
(an older version, exported with ``git archive``), for a before/after in one run::

    mkdir -p /tmp/old && git archive HEAD~1 plugins/storage_sql | tar -x -C /tmp/old
    .venv/bin/python tests/bench/storage_bench.py --plugin-dir /tmp/old/plugins/storage_sql
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kefu.core.domain import Conversation, Message, Site, Visitor, new_id
from kefu.plugins.storage_sql import SqlStorage

POSTGRES_DSN = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MODES = ("group", "single-commit", "one-writer", "reads", "visitors")
LABELS = {
    "group": "group commit (256)",
    "single-commit": "one commit per append",
    "one-writer": "one writer",
    "reads": "resume reads",
    "visitors": "visitor upserts",
}


async def _timed(
    ops: int, body: Callable[[list[float]], Awaitable[None]]
) -> tuple[float, float, list[float]]:
    """Run ``body``; return (wall seconds, CPU seconds, latencies it recorded)."""
    latencies: list[float] = []
    cpu, wall = time.process_time(), time.perf_counter()
    await body(latencies)
    return time.perf_counter() - wall, time.process_time() - cpu, latencies


def _row(ops: int, wall: float, cpu: float, latencies: list[float], **extra) -> dict:
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {
        "ops/s": ops / wall,
        "cpu us/op": cpu / ops * 1e6,
        "p50 ms": cuts[49] * 1000,
        "p99 ms": cuts[98] * 1000,
        **extra,
    }


async def preload(storage: SqlStorage, site: Site, count: int) -> None:
    """``count`` messages in 100 other conversations: a table that is not empty."""
    convs = [
        await storage.create_conversation(Conversation(new_id(), site.id, f"old{i}"))
        for i in range(100)
    ]
    for start in range(0, count, 1000):
        await asyncio.gather(
            *(
                storage.append_message(
                    Message(site.id, convs[i % 100].id, f"p{i}", "visitor", "v", text="old")
                )
                for i in range(start, min(start + 1000, count))
            )
        )


async def _busy(fraction: float, stop: asyncio.Event) -> None:
    """Hold the loop (and the GIL) ``fraction`` of the time, in runs of 1 ms."""
    rest = 0.001 * (1 - fraction) / fraction
    while not stop.is_set():
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(rest)


async def run(
    make: Callable[[int], SqlStorage],
    mode: str,
    writers: int,
    per_writer: int,
    preloaded: int = 0,
    busy: float = 0.0,
) -> dict:
    storage = make(1 if mode == "single-commit" else 256)
    await storage.open()
    try:
        site = await storage.create_site(Site(new_id(), "bench", new_id()))
        await preload(storage, site, preloaded)
        count = 1 if mode == "one-writer" else writers
        convs = [
            await storage.create_conversation(Conversation(new_id(), site.id, f"v{i}"))
            for i in range(count)
        ]

        async def append(latencies: list[float], conv: Conversation, prefix: str = "c") -> None:
            for i in range(per_writer):
                message = Message(
                    site.id, conv.id, f"{prefix}{i}", "visitor", conv.visitor_id, text="hi"
                )
                started = time.perf_counter()
                await storage.append_message(message)
                latencies.append(time.perf_counter() - started)

        if mode in ("group", "single-commit", "one-writer"):
            await asyncio.gather(*(append([], c, "warm") for c in convs[:4]))  # warm up
            batches, items = storage.appender.batches, storage.appender.items

            async def appends(latencies: list[float]) -> None:
                await asyncio.gather(*(append(latencies, c) for c in convs))

            ops = count * per_writer
            extra: dict = {}
            stop = asyncio.Event()
            hog = asyncio.create_task(_busy(busy, stop)) if busy else None
            del WRITES[:]
            wall, cpu, latencies = await _timed(ops, appends)
            stop.set()
            if WRITES:
                extra = {
                    "writer busy": sum(w for w, _ in WRITES) / wall,
                    "writer CPU": sum(c for _, c in WRITES) / wall,
                }
            if hog is not None:
                await hog
            commits = storage.appender.batches - batches
            assert storage.appender.items - items == ops
            return _row(ops, wall, cpu, latencies, commits=commits, batch=ops / commits, **extra)

        if mode == "reads":
            await asyncio.gather(*(append([], c) for c in convs))  # per_writer messages each

            async def resume(latencies: list[float], conv: Conversation) -> None:
                for i in range(per_writer):
                    started = time.perf_counter()
                    found = await storage.get_conversation(site.id, conv.id)
                    assert found is not None
                    await storage.list_messages(site.id, conv.id, after_seq=i % per_writer)
                    latencies.append(time.perf_counter() - started)

            async def resumes(latencies: list[float]) -> None:
                await asyncio.gather(*(resume(latencies, c) for c in convs))

            ops = writers * per_writer
            wall, cpu, latencies = await _timed(ops, resumes)
            return _row(ops, wall, cpu, latencies)

        async def upsert(latencies: list[float], n: int) -> None:
            for i in range(per_writer):
                visitor = Visitor(f"v{n}-{i % 4}", site.id, name="Ann", page="/pricing")
                visitor.attributes = {"plan": "pro", "n": i}
                started = time.perf_counter()
                await storage.upsert_visitor(visitor)
                latencies.append(time.perf_counter() - started)

        async def upserts(latencies: list[float]) -> None:
            await asyncio.gather(*(upsert(latencies, n) for n in range(writers)))

        ops = writers * per_writer
        wall, cpu, latencies = await _timed(ops, upserts)
        return _row(ops, wall, cpu, latencies)
    finally:
        await storage.close()


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


#: (wall, thread CPU) of every SQLite write transaction (see watch_writer)
WRITES: list[tuple[float, float]] = []


def watch_writer(storage_class: type) -> None:
    """Time the SQLite writer's transactions (wall and the thread's CPU): a writer that
    waits for the GIL shows as wall well above CPU."""
    module = importlib.import_module(storage_class.__module__.rsplit(".", 1)[0] + ".sqlite")
    writer = module._Writer
    transaction = writer.transaction

    def timed(conn, jobs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return transaction(conn, jobs)
        finally:
            WRITES.append((time.perf_counter() - wall, time.thread_time() - cpu))

    writer.transaction = staticmethod(timed)


def load_plugin(folder: Path) -> type:
    """``SqlStorage`` of the storage_sql package in ``folder`` (imported under another name)."""
    name = "kefu.plugins.storage_sql_under_test"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.SqlStorage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--per-writer", type=int, default=40, help="operations per writer")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--only", action="append", choices=MODES, help="these rows only")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--plugin-dir", type=Path, help="benchmark this storage_sql folder")
    parser.add_argument(
        "--preload", type=int, default=0, help="messages stored before each row is measured"
    )
    parser.add_argument(
        "--busy", type=float, default=0.0, help="fraction of the loop held by Python work"
    )
    args = parser.parse_args()
    storage_class = load_plugin(args.plugin_dir) if args.plugin_dir else SqlStorage
    if args.backend == "sqlite":
        watch_writer(storage_class)
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    where = (
        f"SQLite, synchronous={args.synchronous}"
        if args.backend == "sqlite"
        else f"PostgreSQL at {POSTGRES_DSN.rsplit('@', 1)[-1]}"
    )
    print(f"{where}, {args.writers} concurrent x {args.per_writer} operations, {args.loop}")
    if args.plugin_dir:
        print(f"storage_sql from {args.plugin_dir}")
    if args.preload:
        print(f"{args.preload:,} messages stored before each row")
    if args.busy:
        print(f"the event loop busy {args.busy:.0%} of the time (1 ms runs of Python work)")
    print(
        f"{'row':<24}{'ops/s':>9}{'CPU us/op':>11}{'p50 ms':>9}{'p99 ms':>9}{'commits':>9}"
        f"{'writer busy':>13}{'writer CPU':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.only or MODES:
            schema = f"kefu_bench_{secrets.token_hex(4)}"
            if args.backend == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / f'bench-{mode}.db'}"

                def make(batch_max: int, url: str = url) -> SqlStorage:
                    return storage_class(
                        url, batch_max=batch_max, sqlite_synchronous=args.synchronous
                    )
            else:
                url = POSTGRES_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)

                def make(batch_max: int, url: str = url, schema: str = schema) -> SqlStorage:
                    return storage_class(url, batch_max=batch_max, schema=schema)

            try:
                r = asyncio.run(
                    run(make, mode, args.writers, args.per_writer, args.preload, args.busy)
                )
            finally:
                if args.backend == "postgres":
                    asyncio.run(_drop_schema(schema))
            commits = f"{r['commits']:>9}" if "commits" in r else f"{'':>9}"
            if "writer busy" in r:
                commits += f"{r['writer busy']:>13.0%}{r['writer CPU']:>12.0%}"
            print(
                f"{LABELS[mode]:<24}{r['ops/s']:>9.0f}{r['cpu us/op']:>11.0f}"
                f"{r['p50 ms']:>9.1f}{r['p99 ms']:>9.1f}{commits}",
                flush=True,
            )


if __name__ == "__main__":
    main()

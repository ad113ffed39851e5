"""Storage benchmark: durable appends/s and ack latency, with and without group commit.

N concurrent writers (think: N visitors typing at once) each append messages
to their own conversation, one after another, on a fresh SQLite file; an
append counts when ``append_message`` returns, i.e. when it is durable.
Run it (not part of ``make test``)::

    .venv/bin/python tests/bench/storage_bench.py --writers 64 --per-writer 40

The ratio of the two rows is the point: without group commit every append
pays for its own commit (its own fsync with ``synchronous=full``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from kefu.core.domain import Conversation, Message, Site, new_id
from kefu.plugins.storage_sql import SqlStorage


async def run(db: Path, writers: int, per_writer: int, batch_max: int, synchronous: str) -> dict:
    storage = SqlStorage(
        f"sqlite+aiosqlite:///{db}", batch_max=batch_max, sqlite_synchronous=synchronous
    )
    await storage.open()
    try:
        site = await storage.create_site(Site(new_id(), "bench", new_id()))
        convs = [
            await storage.create_conversation(Conversation(new_id(), site.id, f"v{i}"))
            for i in range(writers)
        ]
        latencies: list[float] = []

        async def writer(conv: Conversation) -> None:
            for i in range(per_writer):
                message = Message(site.id, conv.id, f"c{i}", "visitor", conv.visitor_id, text="hi")
                started = time.perf_counter()
                await storage.append_message(message)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(writer(c) for c in convs))
        elapsed = time.perf_counter() - started
        cuts = statistics.quantiles(latencies, n=100)
        return {
            "appends/s": len(latencies) / elapsed,
            "p50 ms": cuts[49] * 1000,
            "p99 ms": cuts[98] * 1000,
            "commits": storage.appender.batches,
            "appends": storage.appender.items,
        }
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--per-writer", type=int, default=40, help="appends per writer")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    args = parser.parse_args()
    print(
        f"SQLite, synchronous={args.synchronous}, {args.writers} writers x "
        f"{args.per_writer} appends"
    )
    print(f"{'mode':<22}{'appends/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'commits':>9}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, batch_max in (("group commit (256)", 256), ("one commit per append", 1)):
            db = Path(tmp) / f"bench-{batch_max}.db"
            r = asyncio.run(run(db, args.writers, args.per_writer, batch_max, args.synchronous))
            rows[label] = r
            print(
                f"{label:<22}{r['appends/s']:>11.0f}{r['p50 ms']:>9.1f}{r['p99 ms']:>9.1f}"
                f"{r['commits']:>9}"
            )
    on, off = rows.values()
    print(f"group commit: {on['appends/s'] / off['appends/s']:.1f}x the appends/s")


if __name__ == "__main__":
    main()

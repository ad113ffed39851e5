"""Reports benchmark: how long ``/v1/reports`` takes over many conversations (plugins/reports).

Stores ``--conversations`` conversations (default 20,000) spread over 30 days, each with
``--messages`` messages (visitor, agent and, for 40 %, bot ones), 30 % rated and 20 %
handed off by a bot, through the storage interface on a fresh SQLite file (or a
PostgreSQL schema). Then times, ``--rounds`` times each, what the endpoint does:

- ``facts``: every ``conversation_facts`` page of the range (``FACTS_PAGE`` per query);
- ``figures``: :func:`kefu.plugins.reports.figures.build` on those facts;
- for the whole 30 days and for the last 7.

Run it (not part of ``make test``)::

    .venv/bin/python tests/bench/reports_bench.py
    .venv/bin/python tests/bench/reports_bench.py --backend postgres --conversations 5000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from kefu.core.domain import RESOLVED, Conversation, Message, Visitor
from kefu.core.reports import FACTS_PAGE
from kefu.plugins.reports import figures
from kefu.plugins.storage_sql import SqlStorage

SITE = "bench-site"
DAY = 86400.0


async def fill(storage, args, rng: random.Random, now: float) -> None:
    queue = list(range(args.conversations))

    async def writer() -> None:
        while queue:
            n = queue.pop()
            created = now - rng.random() * 30 * DAY
            bot = rng.random() < 0.4
            meta = {}
            if rng.random() < 0.3:
                meta["rating"] = {"score": rng.randint(1, 5), "scale": 5}
            if bot and rng.random() < 0.5:
                meta["bot_handoff"] = {"reason": "asked", "at": created + 20}
            visitor = await storage.upsert_visitor(Visitor(f"v{n}", SITE))
            await storage.create_conversation(
                Conversation(f"c{n}", SITE, visitor.id, state=RESOLVED, assignee_id=f"a{n % 25}",
                             department=rng.choice(("sales", "support", None)),
                             created_at=created, resolved_at=created + rng.random() * 3600,
                             meta=meta)
            )  # fmt: skip
            for i in range(args.messages):
                kind = "bot" if bot and i == 0 else ("visitor" if i % 2 else "agent")
                await storage.append_message(
                    Message(SITE, f"c{n}", f"m{i}", kind, f"{kind}-1", text="hello there",
                            created_at=created + 10 * (i + 1))
                )  # fmt: skip

    await asyncio.gather(*(writer() for _ in range(args.writers)))


async def collect(storage, since: float, until: float) -> list:
    facts, after = [], None
    while True:
        page = await storage.conversation_facts(SITE, since, until, after=after, limit=FACTS_PAGE)
        facts += page
        if len(page) < FACTS_PAGE:
            return facts
        after = (page[-1].created_at, page[-1].conversation_id)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rng = random.Random(14)
    tmp = tempfile.TemporaryDirectory(prefix="kefu-reports-bench-")
    if args.backend == "sqlite":
        storage = SqlStorage(f"sqlite:///{Path(tmp.name) / 'kefu.db'}", sqlite_synchronous="normal")
    else:
        storage = SqlStorage(args.postgres, schema=f"kefu_reports_bench_{secrets.token_hex(4)}")
    await storage.open()
    now = time.time()
    zone = ZoneInfo("UTC")
    try:
        started = time.perf_counter()
        await fill(storage, args, rng, now)
        print(f"stored {args.conversations:,} conversations x {args.messages} messages in "
              f"{time.perf_counter() - started:.1f} s on {args.backend}; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        today = dt.datetime.now(zone).date()
        print("| range | conversations | facts s (median of rounds) | figures s |")
        print("| --- | --- | --- | --- |")
        for days in (30, 7):
            first = today - dt.timedelta(days=days - 1)
            since = dt.datetime.combine(first, dt.time(), tzinfo=zone).timestamp()
            until = now + DAY
            facts_s, build_s = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                facts = await collect(storage, since, until)
                t1 = time.perf_counter()
                figures.build(facts, first, today, zone, {})
                facts_s.append(t1 - t0)
                build_s.append(time.perf_counter() - t1)
            print(f"| last {days} days | {len(facts):,} | {statistics.median(facts_s):.2f} | "
                  f"{statistics.median(build_s):.2f} |")  # fmt: skip
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        await storage.close()
        tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())

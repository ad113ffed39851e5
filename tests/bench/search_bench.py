"""Search benchmark: find one message among N stored (issue 14: 100,000 within 200 ms p95).

Stores ``--messages`` messages (``--per-conversation`` per conversation, words
drawn from a vocabulary of English and Chinese chat words, so common terms
match thousands of rows) through ``append_message`` on a fresh SQLite file (or
PostgreSQL schema), with ``--needles`` messages that each carry one unique
word. Then times, as the console's search does (``search_messages`` with
limit 20, through the storage interface, on the event loop):

- ``needle``: a unique word (one hit among N) -- the target row;
- ``needle + CJK term``: two terms, both in the one message;
- ``CJK needle``: a unique Chinese phrase (no spaces; trigram index);
- ``common word``: a word in ~5 % of the messages (newest 20 of thousands);
- ``short term``: a 2-character Chinese term (below the trigram size: a LIKE scan);
- ``baseline LIKE scan``: the needle with ``text LIKE '%needle%'`` straight on the
  messages table, no index (what search costs without one), same file, same run.

Run it (not part of ``make test``; about a minute for 100,000 on a quiet box)::

    .venv/bin/python tests/bench/search_bench.py
    .venv/bin/python tests/bench/search_bench.py --backend postgres --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from kefu.core.domain import Conversation, Message, Visitor, new_id
from kefu.plugins.storage_sql import SqlStorage

SITE = "bench-site"
WORDS = (
    "hello hi thanks order shipping refund price discount account password login invoice "
    "delivery package tracking help please where when how much available size color return "
    "broken cancel payment card address phone email today tomorrow week store open closed "
    "你好 谢谢 订单 发货 退款 价格 优惠 账号 密码 发票 快递 包裹 物流 帮助 请问 什么 时候 多少 "
    "尺码 颜色 退货 取消 支付 地址 电话 今天 明天"
).split()
COMMON = "refund"  # ~1 word in 88: in ~5 % of 4..8-word messages


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def fill(storage: SqlStorage, args, rng: random.Random) -> tuple[list[str], list[str]]:
    """Store the messages; return the needles (ASCII, CJK) planted."""
    n_conv = max(1, args.messages // args.per_conversation)
    needles = [f"zq{secrets.token_hex(4)}" for _ in range(args.needles)]
    cjk = [f"独{i}特{i}编号" for i in range(args.needles)]
    planted = {rng.randrange(args.messages): i for i in range(args.needles)}
    t0 = time.time() - args.messages
    convs = []
    for _ in range(n_conv):
        visitor = await storage.upsert_visitor(Visitor(id=new_id(), site_id=SITE))
        convs.append(
            await storage.create_conversation(
                Conversation(id=new_id(), site_id=SITE, visitor_id=visitor.id, created_at=t0)
            )
        )
    queue = list(range(args.messages))

    async def writer(slot: int) -> None:
        while queue:
            n = queue.pop()
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
            if n in planted:
                i = planted[n]
                words[rng.randrange(len(words))] = f"{needles[i]} {cjk[i]}"
            conv = convs[n % n_conv]
            await storage.append_message(
                Message(
                    site_id=SITE,
                    conversation_id=conv.id,
                    cid=new_id(),
                    sender_kind="visitor",
                    sender_id=conv.visitor_id,
                    text=" ".join(words),
                    created_at=t0 + n,
                )
            )

    await asyncio.gather(*(writer(i) for i in range(args.writers)))
    return needles, cjk


async def timed(fn, queries: list[str]) -> tuple[list[float], list[int]]:
    seconds, hits = [], []
    for q in queries:
        started = time.perf_counter()
        found = await fn(q)
        seconds.append(time.perf_counter() - started)
        hits.append(len(found))
    return seconds, hits


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-conversation", type=int, default=50)
    parser.add_argument("--needles", type=int, default=50)
    parser.add_argument("--writers", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="each query set this many times")
    parser.add_argument("--target-ms", type=float, default=200.0)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rng = random.Random(14)
    tmp = tempfile.TemporaryDirectory(prefix="kefu-search-bench-")
    path = Path(tmp.name) / "kefu.db"
    schema = f"kefu_search_bench_{secrets.token_hex(4)}"
    if args.backend == "sqlite":
        storage = SqlStorage(f"sqlite:///{path}", sqlite_synchronous="normal")
    else:
        storage = SqlStorage(args.postgres, schema=schema)
    await storage.open()
    try:
        started = time.perf_counter()
        needles, cjk = await fill(storage, args, rng)
        fill_s = time.perf_counter() - started
        print(
            f"stored {args.messages:,} messages in {fill_s:.1f} s "
            f"({args.messages / fill_s:,.0f}/s) on {args.backend}; "
            f"load average {os.getloadavg()[0]:.2f}"
        )

        def search(q: str):
            return storage.search_messages(SITE, q, limit=20)

        rows = [
            ("needle", needles, search),
            ("needle + CJK term", [f"{n} {c}" for n, c in zip(needles, cjk, strict=True)], search),
            ("CJK needle", cjk, search),
            ("common word", [COMMON] * len(needles), search),
            ("short term", ["订单"] * min(len(needles), 10), search),
        ]
        if args.backend == "sqlite":
            conn = sqlite3.connect(path)

            async def scan(q: str):
                return conn.execute(
                    "SELECT seq FROM messages WHERE site_id = ? AND text LIKE ? "
                    "ORDER BY created_at DESC LIMIT 20",
                    (SITE, f"%{q}%"),
                ).fetchall()

            rows.append(("baseline LIKE scan", needles[:10], scan))
        print(f"{'query':<20} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'hits':>6}")
        report = {}
        for name, queries, fn in rows:
            seconds, hits = [], []
            for _ in range(args.rounds):
                s, h = await timed(fn, queries)
                seconds += s
                hits += h
            p50, p95 = percentile(seconds, 50) * 1000, percentile(seconds, 95) * 1000
            report[name] = p95
            print(
                f"{name:<20} {len(seconds):>4} {p50:>8.1f} {p95:>8.1f} "
                f"{max(seconds) * 1000:>8.1f} {statistics.mean(hits):>6.1f}"
            )
        ok = report["needle"] <= args.target_ms
        print(
            f"target: needle p95 {report['needle']:.1f} ms <= {args.target_ms:.0f} ms: "
            f"{'met' if ok else 'MISSED'}; load average {os.getloadavg()[0]:.2f}"
        )
    finally:
        await storage.close()
        if args.backend == "postgres":
            import asyncpg

            conn_pg = await asyncpg.connect(args.postgres.replace("+asyncpg", ""))
            await conn_pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn_pg.close()
        tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())

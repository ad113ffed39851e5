"""A/B-test figures: ``python tests/bench/bot_ab_bench.py [--visitors N] [--conversations N]``.

Prints, for several weight splits, each variant's share of N synthetic visitors (ids
from a seeded generator) beside its weight and the split's sample-ratio p-value; the
cost of one assignment; the time to build a report from N exposure records; and the
time to read a report from N stored conversations (memory storage, the same code path
as ``GET /v1/bot/experiments/{id}/report``). Exit status 1 if a share is off its
weight by 1 point or more (issue 6's target).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from kefu.core.domain import Conversation, new_id
from kefu.plugins.bot_intents.abtests import experiment_report
from kefu.plugins.bot_intents.experiments import Experiment, build_report, srm_check

SPLITS = [(50, 50), (50, 30, 20), (90, 10), (25, 25, 25, 25)]


def splits(visitors: int) -> bool:
    ok = True
    rng = random.Random(6)
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(visitors)]
    for weights in SPLITS:
        names = [f"v{i}" for i in range(len(weights))]
        exp = Experiment("bench", tuple(zip(names, map(float, weights), strict=True)), "track:x")
        counts = dict.fromkeys(names, 0)
        for vid in ids:
            counts[exp.assign(vid)] += 1
        total = sum(weights)
        worst = max(
            abs(counts[n] / visitors - w / total) for n, w in zip(names, weights, strict=True)
        )
        ok &= worst < 0.01
        shares = " ".join(f"{100 * counts[n] / visitors:.2f}%" for n in names)
        p = srm_check(counts, exp.weights())["p_value"]
        print(
            f"weights {weights}: shares {shares}; worst deviation {100 * worst:.3f} pt; "
            f"SRM p={p:.3f}"
        )
    exp = Experiment("bench", (("a", 1.0), ("b", 1.0)), "track:x")
    started = time.perf_counter()
    for vid in ids:
        exp.assign(vid)
    per = (time.perf_counter() - started) / visitors
    print(f"one assignment: {per * 1e6:.2f} us (BLAKE2b of visitor and experiment id)")
    return ok


def records(n: int) -> list[dict]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        variant = "control" if rng.random() < 0.5 else "coupon"
        rate = 0.10 if variant == "control" else 0.12
        out.append({"variant": variant, "exposed_at": i, "weights": {"control": 1, "coupon": 1},
                    "converted_at": i if rng.random() < rate else None, "allocation": "hash",
                    "convert_on": "track:purchase"})  # fmt: skip
    return out


async def stored_report(conversations: int) -> float:
    from tests.chat_support import make_kernel

    with tempfile.TemporaryDirectory() as folder:
        kernel = make_kernel(Path(folder))
        storage = kernel.make_storage()
        await storage.open()
        for record in records(conversations):
            await storage.create_conversation(
                Conversation(new_id(), "s", new_id(), meta={"bot_ab": {"offer": record}})
            )
        started = time.perf_counter()
        report = await experiment_report(storage, "s", "offer")
        took = time.perf_counter() - started
        await storage.close()
    assert report["exposures"] == conversations
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=20_000)
    args = parser.parse_args()
    ok = splits(args.visitors)
    data = records(args.visitors)
    started = time.perf_counter()
    report = build_report("offer", data)
    took = time.perf_counter() - started
    control, coupon = report["variants"]
    lo, hi = coupon["diff_ci95"]
    print(f"report of {args.visitors:,} records: {took * 1000:.0f} ms; control "
          f"{100 * control['rate']:.2f}%, coupon {100 * coupon['rate']:.2f}%, difference "
          f"{100 * coupon['diff_vs_control']:+.2f} pt "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}]")  # fmt: skip
    took = asyncio.run(stored_report(args.conversations))
    print(f"report read from {args.conversations:,} stored conversations (memory): "
          f"{took * 1000:.0f} ms")  # fmt: skip
    print("OK" if ok else "FAILED: a share is 1 point or more off its weight")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())

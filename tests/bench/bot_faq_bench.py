"""FAQ mining on Zipf-sampled CLINC150 logs: how many of the 10 most frequent intents the
top 10 clusters recover.

A log: ``questions`` utterances; the 150 intents in a seeded random order get Zipf weights
1/rank^s; each question is a random utterance (train+val+test) of an intent drawn by those
weights. The log is stored as real conversations (1-3 questions each, a visitor per
conversation) in the memory storage backend, read back by the miner like any site. A cluster
recovers an intent when that intent is its majority label; recovered = the distinct intents
among the top 10 clusters' majority labels that are among the log's 10 most frequent.

    .venv/bin/python tests/bench/bot_faq_bench.py [--seeds 0-9] [--questions 10000] [--s 1.0]
        [--dataset tests/data/clinc_zh_cs.json] [--splits train,val]

The dataset is read in place from ../shared/datasets/clinc150/data_full.json (``--dataset``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLINC_FILE = Path("clinc150") / "data_full.json"
#: Where the shared datasets may be: $KEFU_DATASETS, ../shared/datasets beside the
#: checkout, or this machine's /work/shared/datasets (a clone elsewhere, e.g. for CI).
DATASET_DIRS = [
    *([Path(os.environ["KEFU_DATASETS"])] if os.environ.get("KEFU_DATASETS") else []),
    ROOT.parent / "shared" / "datasets",
    Path("/work/shared/datasets"),
]
DATASET = next(
    (d / CLINC_FILE for d in DATASET_DIRS if (d / CLINC_FILE).is_file()),
    DATASET_DIRS[0] / CLINC_FILE,
)
SITE = "zipf"


def load_clinc(
    path: Path = DATASET, splits: tuple[str, ...] = ("train", "val", "test")
) -> tuple[dict[str, list[str]], str]:
    raw = path.read_bytes()
    data = json.loads(raw)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for split in splits:
        for text, label in data[split]:
            by_intent[label].append(text)
    return dict(by_intent), hashlib.sha256(raw).hexdigest()


def zipf_log(
    by_intent: dict[str, list[str]], questions: int, seed: int, s: float = 1.0
) -> list[tuple[str, str]]:
    """(text, intent) pairs sampled as described in the module docstring."""
    rng = random.Random(seed)
    intents = sorted(by_intent)
    rng.shuffle(intents)
    weights = [1.0 / (rank + 1) ** s for rank in range(len(intents))]
    labels = rng.choices(intents, weights, k=questions)
    return [(rng.choice(by_intent[label]), label) for label in labels]


async def store_log(storage, log: list[tuple[str, str]], seed: int, now: float) -> dict:
    """Store the log as conversations; returns {(conversation_id, seq): intent}."""
    from kefu.core.domain import Conversation, Message, Site, Visitor

    rng = random.Random(seed + 1)
    await storage.create_site(Site(SITE, "Zipf shop", f"wk-{SITE}"))
    labels: dict[tuple[str, int], str] = {}
    i = n = 0
    while i < len(log):
        n += 1
        cid, vid = f"c{n}", f"v{n}"
        at = now - rng.uniform(0, 28 * 86400)
        await storage.upsert_visitor(Visitor(vid, SITE))
        await storage.create_conversation(
            Conversation(cid, SITE, vid, state="resolved", created_at=at, updated_at=at)
        )
        for k in range(rng.choice((1, 1, 2, 3))):
            if i >= len(log):
                break
            text, label = log[i]
            i += 1
            stored, _ = await storage.append_message(
                Message(SITE, cid, f"q{k}", "visitor", vid, text=text, created_at=at + k)
            )
            labels[(cid, stored.seq)] = label
    return labels


def recovered(report: dict, questions: list, labels: dict, log: list) -> tuple[int, list]:
    truth = Counter(label for _, label in log)
    top10 = {label for label, _ in truth.most_common(10)}
    found, rows = set(), []
    for cluster in report["clusters"][:10]:
        votes = Counter(
            labels[(questions[i].conversation_id, questions[i].seq)] for i in cluster["members"]
        )
        label, count = votes.most_common(1)[0]
        rows.append((cluster["size"], label, count / cluster["size"], label in top10))
        if label in top10:
            found.add(label)
    return len(found), rows


async def run_one(by_intent: dict, seed: int, questions: int, s: float, options=None) -> dict:
    from kefu.plugins.bot_intents.faq import MiningOptions, collect_questions, mine
    from kefu.plugins.storage_memory import MemoryStorage

    log = zipf_log(by_intent, questions, seed, s)
    storage = MemoryStorage()
    await storage.open()
    now = time.time()
    labels = await store_log(storage, log, seed, now)
    started = time.perf_counter()
    found, _scanned = await collect_questions(storage, SITE)
    options = options or MiningOptions(members=True, top=10, now=now)
    report = await asyncio.to_thread(mine, found, options)
    seconds = time.perf_counter() - started
    count, rows = recovered(report, found, labels, log)
    await storage.close()
    return {"seed": seed, "recovered": count, "rows": rows, "seconds": seconds,
            "questions": len(found), "unique": report["unique_questions"]}  # fmt: skip


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--questions", type=int, default=10000)
    parser.add_argument("--s", type=float, default=1.0, help="Zipf exponent")
    parser.add_argument(
        "--splits", default="train,val,test",
        help="the dataset's splits the log draws from (tune on train,val; report on all)",
    )  # fmt: skip
    args = parser.parse_args()
    by_intent, sha = load_clinc(args.dataset, tuple(args.splits.split(",")))
    print(f"CLINC150 {args.dataset} sha256 {sha}, splits {args.splits}")
    print(f"Zipf s={args.s}, {args.questions:,} questions per log")
    results = []
    for seed in _seeds(args.seeds):
        r = asyncio.run(run_one(by_intent, seed, args.questions, args.s))
        results.append(r["recovered"])
        print(f"  seed {seed}: {r['recovered']}/10 of the top intents in the top 10 clusters "
              f"({r['unique']:,} distinct questions, mined in {r['seconds']:.1f} s)")  # fmt: skip
    passed = sum(1 for n in results if n >= 8)
    mean = sum(results) / len(results)
    print(f"recovered >= 8 in {passed} of {len(results)} logs; mean {mean:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

"""Flow versions on disk and clarifying questions: what they cost.

    .venv/bin/python tests/bench/bot_versions_bench.py [--versions 50]

Publishes N versions of examples/flows/shop.yaml (every fifth one with a new intent
example, so the classifier is trained again) into a registry with a FlowStore in a
temporary folder, then measures: the store's size, a restart (a new registry's
``restore``: only the active version is compiled), the first use of a kept version after
the restart (compiled from its stored content on demand: with the classifier of the
active version reused, and with its own classifier trained), and what the clarify logic
adds to a turn (it reuses the turn's one classification).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from kefu.plugins.bot_intents import clarify
from kefu.plugins.bot_intents.engine import _Reply
from kefu.plugins.bot_intents.store import FlowStore
from kefu.plugins.bot_intents.versions import FlowRegistry

ROOT = Path(__file__).resolve().parents[2]
SHOP = (ROOT / "examples" / "flows" / "shop.yaml").read_text(encoding="utf-8")


def version(n: int) -> str:
    text = SHOP.replace("Thank you, goodbye!", f"Thank you, goodbye! ({n})")
    if n % 5 == 0:
        text = text.replace("      - 找客服\n", f"      - 找客服\n      - agent number {n}\n")
    return text


async def clarify_us(flow, texts: list[str], rounds: int = 2000) -> tuple[float, float]:
    """Median µs of the classification and of the clarify logic given it."""
    state = flow.spec.states["menu"]
    session, _ = await flow.start("bench")
    predict, logic = [], []
    for text in texts:
        started = time.perf_counter()
        prediction = [flow.classifier.predict(text)]
        predict.append((time.perf_counter() - started) * 1e6)
        for _ in range(rounds // len(texts)):
            reply = _Reply(flow, session)
            started = time.perf_counter()
            session.clarify_misses = 0
            assert clarify.ask(flow, reply, state, text, prediction)
            logic.append((time.perf_counter() - started) * 1e6)
    return statistics.median(predict), statistics.median(logic)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = FlowStore(Path(folder) / "bot")
        registry = FlowRegistry()
        registry.store = store
        started = time.perf_counter()
        shas = [(await registry.publish(version(n), "shop.yaml")).sha256 for n in range(count)]
        publish_s = time.perf_counter() - started
        await registry.rollback("shop")
        found = list(Path(folder).rglob("*"))  # noqa: ASYNC240 - a bench, not the server
        size = sum(p.stat().st_size for p in found if p.is_file())
        files = len([p for p in found if p.suffix == ".yaml"])

        restarted = FlowRegistry()
        restarted.store = FlowStore(Path(folder) / "bot")
        started = time.perf_counter()
        await restarted.restore()
        restore_s = time.perf_counter() - started
        assert restarted.active["shop"] == registry.active["shop"]
        started = time.perf_counter()
        old = await restarted.load(shas[1])  # the same intents as the active version
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        trained = await restarted.load(shas[5])  # an intent example of its own
        train_s = time.perf_counter() - started
        assert old and trained and len(restarted.history["shop"]) == count

        text = version(0).replace("threshold: 0.5", "threshold: 0.99")  # it has a clarify block
        asking = await FlowRegistry().publish(text, "clarify.yaml")
        texts = ["I have a question about my parcel and returning it", "where is my refund"]
        predict_us, logic_us = await clarify_us(asking, texts)

    print(
        f"versions published: {count} in {publish_s:.2f} s; {files} content files, {size:,} bytes"
    )
    print(f"restart (restore, active version compiled): {restore_s * 1000:.0f} ms")
    print(f"first use of a kept version after the restart: {load_s * 1000:.0f} ms")
    print(f"... of one whose classifier must be trained: {train_s * 1000:.0f} ms")
    print(f"classification of an utterance: {predict_us:.0f} µs (median)")
    print(f"clarify logic on top (candidates, question, choices): {logic_us:.1f} µs (median)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=50)
    asyncio.run(main(parser.parse_args().versions))

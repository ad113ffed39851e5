"""Generative answers, measured against the stand-in model server (tests/llm_standin.py).

No OpenAI-compatible model server exists on this machine: the "model" here is a mock that
streams a scripted answer at ``--piece-ms`` per 8-character piece (about 2 tokens, so 20 ms
is ~100 tokens/s, a fast GPU server; 60 ms is a slow CPU one). What this measures is kefu's
side: from the visitor's send over a real WebSocket to the ack, the first ``bot_draft``
frame and the stored answer, against the same questions answered with the passage as it
is (no provider); and the acks of visitors who write while ``--visitors`` answers are
being composed at once (``max_concurrent`` 4: the others get the passage at once).

    .venv/bin/python tests/bench/llm_bench.py                  # ~1 minute
    .venv/bin/python tests/bench/llm_bench.py --piece-ms 60 --questions 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kefu.core.web_app import create_app
from kefu.plugins.llm_openai import provider_of
from tests.chat_support import app_kernel, make_kernel
from tests.llm_standin import StandIn
from tests.routing_support import ROUTING, site_of, visitor
from tests.test_bot_example import shop_config
from tests.test_bot_faq import SHOP
from tests.test_llm_openai import ARTICLES, QUESTION, llm_toml

BOT = {"kind": "bot", "id": "shop"}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"{name:<44} n={len(ms):<3} p50 {statistics.median(ms):7.1f} ms  "
            f"p99 {pct(ms, 99):7.1f} ms  max {max(ms):7.1f} ms")  # fmt: skip


async def server(tmp: Path, llm: str) -> tuple[TestClient, object]:
    flow = tmp / "shop.yaml"
    flow.write_bytes(SHOP.read_bytes())
    kernel = make_kernel(tmp, ROUTING + shop_config(flow) + llm, storage="sql")
    client = TestClient(TestServer(create_app(kernel)))
    await client.start_server()
    site = await site_of(client)
    for article_id, (title, body) in ARTICLES.items():
        record = {"title": title, "body": body, "lang": "en"}
        await kernel.storage.put_record(site.site.id, "kb.article", article_id, record)
    return client, site


async def one_question(client, site, cid: str = "q") -> dict[str, float]:
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender=BOT, within=10)  # greeting
    sent = time.perf_counter()
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid=cid,
                          text=QUESTION)  # fmt: skip
    out = {}
    ack = await guest.peer.expect("ack", cid=cid, within=10)
    out["ack"] = time.perf_counter() - sent
    answer_cid = f"bot-{ack['seq']}-0"
    drafts = 0
    while True:
        msg = await asyncio.wait_for(guest.peer.ws.receive(), 20)
        frame = orjson.loads(msg.data)
        if frame.get("op") == "bot_draft" and frame["cid"] == answer_cid:
            drafts += 1
            out.setdefault("first_draft", time.perf_counter() - sent)
        if frame.get("op") == "message" and frame.get("cid") == answer_cid:
            out["stored"] = time.perf_counter() - sent
            out["drafts"] = drafts
            out["generated"] = "Sources:" in frame["text"]
            out["chars"] = len(frame["text"])
            break
    await guest.peer.ws.close()
    return out


async def run(args) -> None:
    standin = await StandIn(delay=args.piece_ms / 1000).start()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        for name, tmp, llm in (("passage (no provider)", a, ""),
                               ("generated (stand-in)", b, llm_toml(standin.url))):  # fmt: skip
            client, site = await server(Path(tmp), llm)
            try:
                runs = [await one_question(client, site) for _ in range(args.questions)]
                print(line(f"{name}: send -> ack", [r["ack"] for r in runs]))
                if llm:
                    print(line(f"{name}: send -> first bot_draft",
                               [r["first_draft"] for r in runs]))  # fmt: skip
                    provider = provider_of(app_kernel(client.app))
                    print(line(f"{name}: request -> first text (kefu)",
                               provider.first_text_s))  # fmt: skip
                    drafts = statistics.mean(r["drafts"] for r in runs)
                    chars = statistics.mean(r["chars"] for r in runs)
                    print(f"{'bot_draft frames per answer':<44} {drafts:.1f} ({chars:.0f} chars)")
                    assert all(r["generated"] for r in runs)
                print(line(f"{name}: send -> stored answer", [r["stored"] for r in runs]))
                # many at once (with the provider: 4 composed, the others the passage)
                many = await asyncio.gather(*(one_question(client, site, f"m{i}")
                                              for i in range(args.visitors)))  # fmt: skip
                print(line(f"{args.visitors} at once: send -> ack", [r["ack"] for r in many]))
                print(line(f"{args.visitors} at once: send -> stored", [r["stored"] for r in many]))
                if llm:
                    generated = sum(r["generated"] for r in many)
                    print(f"{args.visitors} at once: generated {generated}, "
                          f"passage {len(many) - generated}")  # fmt: skip
            finally:
                await client.close()
    await standin.stop()
    print(f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--piece-ms", type=float, default=20.0)
    parser.add_argument("--visitors", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

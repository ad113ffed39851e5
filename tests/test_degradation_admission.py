"""Degradation admission (issue 16): level 2 admits new WebSocket handshakes and visitor
sessions at a per-worker rate, refusing the rest with ``503 busy`` and a jittered
``Retry-After``; level 0 never refuses; level 3 refuses every new one; the participants
already connected are never touched. Real handshakes over a real socket."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from chat_support import WsPeer, app_kernel, open_chat, visitor_session
from test_degradation import client_for, config

RATE = 20.0  # handshakes and sessions a second at level 2
BURST_S = 0.25  # the bucket: 5 at once
SETTINGS = (
    f"handshake_limit_per_s = {RATE}\nsession_limit_per_s = {RATE}\nlimit_burst_s = {BURST_S}\n"
)


async def handshakes(client, tokens: list[str]) -> tuple[list, float]:
    """Every token's WebSocket opened at once: ``[(101, peer) | (status, Retry-After)]``."""

    async def one(token: str):
        try:
            ws = await client.ws_connect(f"/v1/ws?token={token}")
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, (exc.headers or {}).get("Retry-After")
        peer = WsPeer(ws)
        await peer.expect("hello")
        return 101, peer

    began = time.monotonic()
    results = await asyncio.gather(*(one(t) for t in tokens))
    return list(results), time.monotonic() - began


async def close_all(results) -> None:
    await asyncio.gather(*(peer.close() for status, peer in results if status == 101))


async def chat_round(chat, tag: str, n: int = 5) -> None:
    """The connected visitor and agent keep talking: acknowledged and delivered both ways."""
    for k in range(n):
        await chat.visitor.send(
            op="send", conversation_id=chat.conversation_id, cid=f"{tag}v{k}", text="hi"
        )
        await chat.visitor.expect("ack", cid=f"{tag}v{k}")
        await chat.agent.expect("message", cid=f"{tag}v{k}")
        await chat.agent.send(
            op="send", conversation_id=chat.conversation_id, cid=f"{tag}a{k}", text="yes"
        )
        await chat.agent.expect("ack", cid=f"{tag}a{k}")
        await chat.visitor.expect("message", cid=f"{tag}a{k}")


async def test_level_2_admits_new_handshakes_at_the_rate_and_level_0_never_refuses(
    aiohttp_client, tmp_path
):
    client = await client_for(aiohttp_client, tmp_path, config(settings=SETTINGS))
    kernel = app_kernel(client.app)
    controller = kernel.pressure
    chat = await open_chat(client)
    key = chat.site.site.widget_key
    # level 0: 60 sessions and 60 handshakes at once, far above the rate: all admitted
    sessions = await asyncio.gather(*(visitor_session(client, key) for _ in range(60)))
    tokens = [s["token"] for s in sessions]
    results, _ = await handshakes(client, tokens)
    assert [status for status, _ in results].count(101) == 60
    await close_all(results)
    assert controller.level == 0 and not controller.rate_limited

    # level 2: the same burst, the connected chat talking meanwhile
    await controller.override(2, 60, by="test")
    talk = asyncio.ensure_future(chat_round(chat, "l2"))
    results, took = await handshakes(client, tokens)
    await asyncio.wait_for(talk, 10)  # unaffected: every message acked and delivered
    opened = [status for status, _ in results].count(101)
    refused = [after for status, after in results if status == 503]
    assert opened + len(refused) == 60, results
    assert 1 <= opened <= RATE * BURST_S + RATE * took + 1, (opened, took)
    assert len(refused) >= 60 - (RATE * BURST_S + RATE * took + 1)
    seconds = [int(after) for after in refused]  # retry_after_s 5 s +-50 %
    assert all(2 <= s <= 8 for s in seconds) and len(set(seconds)) > 1, seconds
    assert controller.rate_limited["ws"] == len(refused)
    await close_all(results)
    # a refused client that waits is let in (the bucket refills at the rate)
    await asyncio.sleep(1.0)
    again, _ = await handshakes(client, tokens[:3])
    assert [status for status, _ in again] == [101, 101, 101]
    await close_all(again)
    # new visitor sessions: the same limit
    answers = []

    async def session():
        resp = await client.post("/v1/visitors/session", json={"widget_key": key})
        answers.append((resp.status, resp.headers.get("Retry-After")))
        resp.release()

    await asyncio.gather(*(session() for _ in range(40)))
    statuses = [status for status, _ in answers]
    assert statuses.count(503) >= 20 and 1 <= statuses.count(200) <= 20, statuses
    assert all(after for status, after in answers if status == 503)
    assert controller.rate_limited["session"] == statuses.count(503)

    # level 3: every new connection refused, the chat still talks
    await controller.override(3, 60, by="test")
    results, _ = await handshakes(client, tokens[:10])
    assert [status for status, _ in results] == [503] * 10
    await chat_round(chat, "l3", 2)
    assert not chat.visitor.ws.closed and not chat.agent.ws.closed

    # back at 0: nothing refused any more
    await controller.override(None, 1)
    assert controller.level == 0
    results, _ = await handshakes(client, tokens)
    assert [status for status, _ in results].count(101) == 60
    await close_all(results)
    status = controller.snapshot()
    assert status["rate_limited"]["ws"] == controller.rate_limited["ws"]
    assert status["refused"]["ws"] == 10

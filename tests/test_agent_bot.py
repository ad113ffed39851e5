"""The agent-bot API with the example bot of examples/agent-bot/ running as its own process:
kefu and the bot talk over real sockets both ways (kefu's webhook POSTs to the bot, the
bot's REST calls to kefu). The bot greets, answers, and hands over to a human."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from kefu.core.domain import BOT, QUEUED
from tests.chat_support import add_site, app_kernel, login, make_kernel, visitor_session, ws_peer
from tests.cluster_support import ROOT, free_port

BOT_SCRIPT = ROOT / "examples" / "agent-bot" / "bot.py"
pytestmark = pytest.mark.timeout(60)


def spawn_bot(port: int, kefu_url: str, token: str, secret: str, log) -> subprocess.Popen:
    env = {**os.environ, "KEFU_URL": kefu_url, "KEFU_BOT_TOKEN": token, "KEFU_BOT_SECRET": secret}
    return subprocess.Popen(
        [sys.executable, str(BOT_SCRIPT), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def _ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, "the example bot exited"
            assert time.monotonic() < deadline, "the example bot did not start"
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.1)


async def _bot_says(peer, within: float = 10.0) -> str:
    """The next message the bot sent, skipping other frames."""
    async with asyncio.timeout(within):
        while True:
            frame = await peer.expect("message", within=within)
            if frame["sender"]["kind"] == "bot":
                return frame["text"]


async def test_the_example_bot_greets_answers_and_hands_over(aiohttp_client, tmp_path):
    from kefu.core.web_app import create_app

    config = "[plugins]\ndisable = ['bot_intents']\n"
    client = await aiohttp_client(create_app(make_kernel(tmp_path, config)))
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    admin = await login(client, site.site.id, site.admin.email)
    port = free_port()
    resp = await client.post(
        "/v1/agent_bots", headers={"Authorization": f"Bearer {admin}"},
        json={"name": "shop assistant", "url": f"http://127.0.0.1:{port}/webhook"},
    )  # fmt: skip
    assert resp.status == 201, await resp.text()
    registered = await resp.json()
    assert registered["token"].startswith("kb_") and registered["secret"].startswith("whsec_")
    log = (tmp_path / "bot.log").open("ab")
    proc = spawn_bot(port, str(client.make_url("")).rstrip("/"), registered["token"],
                     registered["secret"], log)  # fmt: skip
    try:
        await _ready(f"http://127.0.0.1:{port}/healthz", proc)
        session = await visitor_session(client, site.site.widget_key)
        visitor = await ws_peer(client, session["token"])
        await visitor.send(op="start")
        started = await visitor.expect("started")
        conv = started["conversation"]["id"]
        assert started["conversation"]["state"] == BOT
        assert (await _bot_says(visitor)).startswith("Hi, I'm the shop's assistant")

        await visitor.send(op="send", conversation_id=conv, cid="q1",
                           text="How long does shipping take?")  # fmt: skip
        assert (await _bot_says(visitor)).startswith("Orders ship within 2 working days")

        await visitor.send(op="send", conversation_id=conv, cid="q2", text="I want a human")
        assert (await _bot_says(visitor)).startswith("Of course, I'm handing you over")
        deadline = time.monotonic() + 10
        while (stored := await kernel.storage.get_conversation(site.site.id, conv)).state == BOT:
            assert time.monotonic() < deadline, "no handoff"
            await asyncio.sleep(0.05)
        assert stored.state == QUEUED
        assert stored.meta["bot_handoff"]["reason"] == "the visitor asked for a person"

        # a human's turn now: the bot gets nothing more and may not speak
        await visitor.send(op="send", conversation_id=conv, cid="q3", text="shipping?")
        await visitor.expect("ack", cid="q3")
        later = await visitor.quiet(1.0)
        assert not [f for f in later if f.get("op") == "message" and f["sender"]["kind"] == "bot"]
        bot_auth = {"Authorization": f"Bearer {registered['token']}"}
        resp = await client.post(
            f"/v1/agent_bot/conversations/{conv}/messages",
            json={"cid": "late", "text": "me again"}, headers=bot_auth,
        )  # fmt: skip
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_held"
        resp = await client.post(
            f"/v1/agent_bot/conversations/{conv}/messages",
            json={"cid": "x", "text": "x"}, headers={"Authorization": "Bearer kb_nope.nope"},
        )  # fmt: skip
        assert resp.status in (401, 403)
        resp = await client.post(
            f"/v1/agent_bot/conversations/{conv}/handoff", json={},
            headers={"Authorization": f"Bearer {admin}"},
        )  # fmt: skip
        assert resp.status == 403  # an agent's token is not a bot's
        messages = await kernel.storage.list_messages(site.site.id, conv)
        kinds = [(m.sender_kind, m.text[:12]) for m in messages]
        assert [k for k, _ in kinds] == ["bot", "visitor", "bot", "visitor", "bot", "visitor"]
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    print("\n" + (tmp_path / "bot.log").read_text()[-600:])

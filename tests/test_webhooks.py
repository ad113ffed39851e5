"""Outgoing webhooks (plugins/webhooks) against a real local receiver: every event
delivered, signed, in order per conversation, once, after the receiver failed 5 times;
dead letters and resend; a hanging receiver does not slow the message path; and a real
``kefu run`` restart in between loses nothing (SQLite storage, two processes in turn).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from kefu.core import signing
from tests.chat_support import add_site, app_kernel, login, make_kernel, open_chat
from tests.cluster_support import ROOT, agent_token, free_port, post_json, visitor_token
from tests.webhook_support import Receiver, in_order_per_conversation

FAST = (
    "[webhooks]\nbackoff_base_s = 0.05\nbackoff_max_s = 0.4\npoll_interval_s = 0.1\n"
    "refresh_s = 0.5\ntimeout_s = 5\n"
)


def test_signature_verifies_and_refuses_tampering_and_replays():
    body = b'{"id":"evt_1"}'
    header = signing.sign("whsec_x", body, now=1_000_000)
    assert re.fullmatch(r"t=1000000,v1=[0-9a-f]{64}", header)
    assert signing.verify("whsec_x", header, body, now=1_000_100)
    assert not signing.verify("whsec_y", header, body, now=1_000_100)  # another secret
    assert not signing.verify("whsec_x", header, body + b" ", now=1_000_100)  # body changed
    assert not signing.verify("whsec_x", header, body, now=1_000_000 + 301)  # replayed late
    assert not signing.verify("whsec_x", "v1=abc", body)


async def _subscribe(client, token: str, url: str, events=("*",)) -> dict:
    resp = await client.post(
        "/v1/webhooks", json={"url": url, "events": list(events)},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_every_event_once_in_order_after_the_receiver_failed_5_times(
    aiohttp_client, tmp_path
):
    receiver = Receiver(fail_first=5)
    await receiver.start()
    try:
        client, site, admin = await _kefu(aiohttp_client, tmp_path)
        sub = await _subscribe(client, admin, receiver.url)
        assert sub["secret"].startswith("whsec_")
        receiver.secret = sub["secret"]
        chat = await open_chat(client, site)
        conv = chat.conversation_id
        for n in range(4):
            await chat.visitor.send(op="send", conversation_id=conv, cid=f"v{n}", text=f"v{n}")
            await chat.visitor.expect("ack", cid=f"v{n}")
            await chat.agent.send(op="send", conversation_id=conv, cid=f"a{n}", text=f"a{n}")
            await chat.agent.expect("ack", cid=f"a{n}")
        resp = await client.post(
            f"/v1/conversations/{conv}/resolve", headers={"Authorization": f"Bearer {admin}"}
        )
        assert resp.status == 200, await resp.text()
        wanted = ["conversation.created", *["message.created"] * 8, "conversation.resolved"]
        await receiver.wait_for(
            lambda: sum(1 for r in receiver.accepted if r.event in wanted) >= len(wanted),
            30, "every event accepted",
        )  # fmt: skip
        await asyncio.sleep(0.3)  # a second copy would come now
    finally:
        await receiver.stop()
    assert receiver.failed == 5
    assert all(r.signed for r in receiver.requests), "every request's signature verifies"
    got = in_order_per_conversation(receiver.accepted)[conv]
    assert [r.event for r in got if r.event in wanted] == wanted  # in order
    texts = [r.body["data"]["message"]["text"] for r in got if r.event == "message.created"]
    assert texts == [t for n in range(4) for t in (f"v{n}", f"a{n}")]
    seqs = [r.body["data"]["seq"] for r in got if r.event == "message.created"]
    assert seqs == sorted(seqs) and len(set(seqs)) == 8
    event_ids = [r.event_id for r in receiver.accepted]
    assert len(event_ids) == len(set(event_ids))  # each event accepted once
    first = receiver.requests[0]
    assert [r.delivery for r in receiver.requests[:6]] == [first.delivery] * 6  # retried
    # the delivery log shows the first delivery's five failures and its success
    resp = await client.get(
        f"/v1/webhooks/{sub['id']}/deliveries?status=delivered&limit=500",
        headers={"Authorization": f"Bearer {admin}"},
    )
    log = (await resp.json())["deliveries"]
    oldest = log[-1]
    assert oldest["event"] == "conversation.created" and oldest["attempts"] == 6
    assert [a["status"] for a in oldest["history"]] == [500] * 5 + [204]


async def _kefu(aiohttp_client, tmp_path: Path, webhooks: str = ""):
    """An in-process kefu (memory storage) with a site; (client, site, admin token)."""
    from kefu.core.web_app import create_app

    extra = FAST + webhooks
    extra += "[gateway]\nrate = 10000\nburst = 10000\n[plugins]\ndisable = ['bot_intents']\n"
    client = await aiohttp_client(create_app(make_kernel(tmp_path, extra)))
    site = await add_site(app_kernel(client.app))
    return client, site, await login(client, site.site.id, site.admin.email)


async def test_dead_letter_then_resend(aiohttp_client, tmp_path):
    receiver = Receiver(always_fail=True)
    await receiver.start()
    try:
        client, site, admin = await _kefu(aiohttp_client, tmp_path, "max_attempts = 3\n")
        auth = {"Authorization": f"Bearer {admin}"}
        sub = await _subscribe(client, admin, receiver.url, ["conversation.created"])
        receiver.secret = sub["secret"]
        chat = await open_chat(client, site)
        url = f"/v1/webhooks/{sub['id']}/deliveries"

        async def listed(status: str) -> list[dict]:
            resp = await client.get(f"{url}?status={status}", headers=auth)
            assert resp.status == 200, await resp.text()
            return (await resp.json())["deliveries"]

        deadline = time.monotonic() + 20
        while not await listed("dead"):
            assert time.monotonic() < deadline, "no dead letter"
            await asyncio.sleep(0.1)
        (dead,) = await listed("dead")
        assert dead["attempts"] == 3 and [a["status"] for a in dead["history"]] == [500] * 3
        assert dead["conversation_id"] == chat.conversation_id
        assert not await listed("queued") and len(receiver.requests) == 3
        receiver.always_fail = False
        resp = await client.post(f"{url}/{dead['id']}/resend", headers=auth)
        assert resp.status == 202, await resp.text()
        await receiver.wait_for(lambda: receiver.accepted, 10, "the resent delivery")
        assert receiver.accepted[0].event_id == dead["event_id"]  # the same event again
        assert not await listed("dead")
        (delivered,) = await listed("delivered")
        assert delivered["event_id"] == dead["event_id"]
        # refusals
        resp = await client.post(f"{url}/{dead['id']}/resend", headers=auth)
        assert resp.status == 404  # it left the dead letters; the new one has another id
        agent = await login(client, site.site.id, site.agent.email)
        resp = await client.get("/v1/webhooks", headers={"Authorization": f"Bearer {agent}"})
        assert resp.status == 403  # admins only
        resp = await client.post(
            "/v1/webhooks", json={"url": "ftp://x", "events": ["*"]}, headers=auth
        )
        assert resp.status == 400
        resp = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["nope"]}, headers=auth
        )
        assert resp.status == 400
        listing = await (await client.get("/v1/webhooks", headers=auth)).json()
        assert [w["id"] for w in listing["webhooks"]] == [sub["id"]]
        assert listing["webhooks"][0]["secret"] is None  # shown only at creation
        assert "message.created" in listing["events"]
    finally:
        await receiver.stop()


async def test_a_hanging_receiver_does_not_slow_the_message_path(aiohttp_client, tmp_path):
    """Each delivery hangs 3 s at the receiver; 30 messages are still acknowledged at the
    pace of the same run without any subscription (the ratio, not a fixed time)."""
    receiver = Receiver(hang_s=3.0)
    await receiver.start()
    try:
        client, site, admin = await _kefu(aiohttp_client, tmp_path)
        chat = await open_chat(client, site)

        async def burst(tag: str) -> float:
            began = time.perf_counter()
            for n in range(30):
                cid = f"{tag}{n}"
                await chat.visitor.send(
                    op="send", conversation_id=chat.conversation_id, cid=cid, text=cid
                )
                await chat.visitor.expect("ack", cid=cid)
            return time.perf_counter() - began

        baseline = await burst("before")
        sub = await _subscribe(client, admin, receiver.url, ["message.created"])
        receiver.secret = sub["secret"]
        with_hook = await burst("after")
        await receiver.wait_for(lambda: receiver.requests, 5, "a delivery started")
        print(f"\nacks of 30: {baseline:.3f} s without, {with_hook:.3f} s with a hanging hook")
        assert with_hook < max(3 * baseline, 1.0)  # far from 30 x 3 s
        assert len(receiver.accepted) == 0  # the receiver is still hanging on the first
    finally:
        await receiver.stop()


# -- a real restart ----------------------------------------------------------------------


class Kefu:
    """``kefu run`` on SQLite in ``root`` (the same data dir across restarts)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.root = root
        self.config = root / "kefu.toml"
        self.config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\ndata_dir = "{root / "data"}"\n'
            'reload = false\ndrain_timeout = 5\n[auth]\npassword_cost = 10\n'
            "[plugins]\ndisable = ['bot_intents']\n" + FAST,
            encoding="utf-8",
        )  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.out = root / "stdout.log"

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kefu.core.cli", "run", "--config", str(self.config)],
            stdout=self.out.open("ab"), stderr=(self.root / "stderr.log").open("ab"),
            stdin=subprocess.DEVNULL, cwd=self.root,
            env={**os.environ, "PYTHONPATH": str(ROOT), "KEFU_LOG_LEVEL": "WARNING"},
        )  # fmt: skip

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc.poll() is None, (self.root / "stderr.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "kefu did not become ready"
                try:
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM: the drain, then the plugins stop (the webhooks' buffer is written)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def _send(ws: aiohttp.ClientWebSocketResponse, conv: str, cid: str) -> None:
    await ws.send_bytes(orjson.dumps({"op": "send", "conversation_id": conv, "cid": cid,
                                      "text": cid}))  # fmt: skip
    async with asyncio.timeout(10):
        async for msg in ws:
            frame = orjson.loads(msg.data)
            if frame.get("op") == "ack" and frame["cid"] == cid:
                return


@pytest.mark.timeout(120)
async def test_a_kefu_restart_in_between_loses_no_delivery(tmp_path):
    """The receiver fails its first 5 requests; kefu is stopped (SIGTERM) while
    deliveries wait for their retry, and started again on the same SQLite file; every
    event of before and after reaches the receiver once, in order."""
    receiver = Receiver(fail_first=5)
    await receiver.start()
    node = Kefu(tmp_path)
    try:
        await node.start()
        banner = node.out.read_text()
        widget_key = re.search(r"widget key '([^']+)'", banner)[1]
        password = re.search(r"password '([^']+)'", banner)[1]
        async with aiohttp.ClientSession() as http:
            admin = await agent_token(http, node.base, "demo", "admin@example.com", password)
            sub = await post_json(
                http, f"{node.base}/v1/webhooks", {"url": receiver.url, "events": ["*"]}, admin
            )
            receiver.secret = sub["secret"]
            token = await visitor_token(http, node.base, widget_key)
            ws = await http.ws_connect(f"{node.base.replace('http', 'ws')}/v1/ws?token={token}")
            await ws.send_bytes(orjson.dumps({"op": "start", "ref": "s"}))
            async for msg in ws:
                frame = orjson.loads(msg.data)
                if frame.get("op") == "started":
                    conv = frame["conversation"]["id"]
                    break
            for n in range(5):
                await _send(ws, conv, f"before{n}")
            await ws.close()
        assert node.stop() == 0
        before = len(receiver.accepted)
        await node.start()  # the same data dir: the queue is in its SQLite file
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{node.base.replace('http', 'ws')}/v1/ws?token={token}")
            for n in range(3):
                await _send(ws, conv, f"after{n}")
            await ws.close()
            wanted = 1 + 8  # conversation.created and 8 messages
            await receiver.wait_for(
                lambda: sum(1 for r in receiver.accepted
                            if r.event in ("conversation.created", "message.created")) >= wanted,
                30, "every event after the restart",
            )  # fmt: skip
            await asyncio.sleep(0.3)
            async with http.get(
                f"{node.base}/v1/conversations/{conv}/messages?limit=100",
                headers={"Authorization": f"Bearer {admin}"},
            ) as resp:
                stored = (await resp.json())["messages"]
    finally:
        node.kill()
        await receiver.stop()
    print(f"\nrestart: {before} accepted before it, {len(receiver.accepted)} in all, "
          f"{receiver.failed} failed requests")  # fmt: skip
    assert receiver.failed == 5 and before < wanted  # some were still queued at the stop
    assert all(r.signed for r in receiver.requests)
    got = [r for r in in_order_per_conversation(receiver.accepted)[conv]
           if r.event in ("conversation.created", "message.created")]  # fmt: skip
    assert got[0].event == "conversation.created"
    texts = [r.body["data"]["message"]["text"] for r in got[1:]]
    assert texts == [f"before{n}" for n in range(5)] + [f"after{n}" for n in range(3)]
    seqs = [r.body["data"]["seq"] for r in got[1:]]
    assert seqs == [m["seq"] for m in stored if m["cid"].startswith(("before", "after"))]
    assert len({r.event_id for r in receiver.accepted}) == len(receiver.accepted)  # once

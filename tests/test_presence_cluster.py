"""Agent presence across two real kefu processes (PostgreSQL + Redis, issue 12): automatic
away is one decision taken when the agent's last connection anywhere goes, and the mark
it leaves is taken back by their next connection to any process."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
import orjson
import pytest

from tests.cluster_support import Node, agent_token, two_nodes

pytestmark = pytest.mark.needs_service

GRACE = 1.0


class Console:
    """An agent's WebSocket that keeps every presence frame it gets."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token
        self.frames: list[dict] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task | None = None

    async def open(self) -> Console:
        url = f"{self.base.replace('http', 'ws', 1)}/v1/ws?token={self.token}"
        self.ws = await self.http.ws_connect(url, heartbeat=None)
        hello = orjson.loads((await self.ws.receive(timeout=30)).data)
        assert hello["op"] == "hello", hello
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                frame = orjson.loads(msg.data)
                if frame.get("op") == "presence":
                    self.frames.append(frame)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader


async def _status(http: aiohttp.ClientSession, base: str, token: str, agent_id: str) -> str:
    async with http.get(f"{base}/v1/agents", headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.json()
        assert r.status == 200, body
    agents = body["agents"] if isinstance(body, dict) else body
    return next(a["status"] for a in agents if a["id"] == agent_id)


async def _wait_for(console: Console, agent_id: str, status: str, within: float) -> dict:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        for frame in console.frames:
            if frame.get("agent_id") == agent_id and frame.get("status") == status:
                return frame
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no presence {status} for {agent_id}: {console.frames}")
        await asyncio.sleep(0.05)


async def _scenario(a: Node, b: Node, password: str) -> None:
    async with aiohttp.ClientSession() as http:
        admin = await agent_token(http, a.base, "demo", "admin@example.com", password)
        headers = {"Authorization": f"Bearer {admin}"}
        body = {"email": "ann@example.com", "name": "Ann", "password": "s3cret-pass-ann",
                "roles": ["agent"]}  # fmt: skip
        async with http.post(f"{a.base}/v1/agents", json=body, headers=headers) as resp:
            ann = await resp.json()
            assert resp.status in (200, 201), ann
        ann_id = ann["id"] if "id" in ann else ann["agent"]["id"]
        ann_a = await agent_token(http, a.base, "demo", body["email"], body["password"])
        ann_b = await agent_token(http, b.base, "demo", body["email"], body["password"])
        watcher = await Console(http, b.base, admin).open()  # sees every presence frame

        # Ann on both processes; she leaves process a: b still holds her, she stays online
        on_a = await Console(http, a.base, ann_a).open()
        on_b = await Console(http, b.base, ann_b).open()
        await on_a.ws.send_json({"op": "presence", "status": "online", "ref": "p"})
        await _wait_for(watcher, ann_id, "online", 10)
        await on_a.close()
        await asyncio.sleep(GRACE * 3)  # a's grace period is over: it must find b's entry
        assert await _status(http, a.base, admin, ann_id) == "online"
        assert not [f for f in watcher.frames if f.get("status") == "away"], watcher.frames

        # she leaves b too: away, decided once (one frame with auto), by whichever process
        await on_b.close()
        frame = await _wait_for(watcher, ann_id, "away", GRACE + 10)
        assert frame.get("auto") is True
        await asyncio.sleep(GRACE)
        aways = [f for f in watcher.frames if f.get("status") == "away"]
        assert len(aways) == 1, aways
        assert await _status(http, b.base, admin, ann_id) == "away"

        # she comes back on process a (whichever set her away): online again, once
        watcher.frames.clear()
        back = await Console(http, a.base, ann_a).open()
        frame = await _wait_for(watcher, ann_id, "online", 10)
        assert frame.get("auto") is True
        assert await _status(http, a.base, admin, ann_id) == "online"
        await back.close()
        await watcher.close()


def test_automatic_away_across_two_processes(tmp_path):
    extra = f"away_grace_s = {GRACE}\n"  # (in [routing], the last section)
    with two_nodes(tmp_path, "presence", extra=extra) as (a, b):
        password = re.search(r"password '([^']+)'", a.banner())
        assert password, a.banner()
        asyncio.run(_scenario(a, b, password[1]))

"""Helpers for the auth, gateway and transport tests: a kernel on memory storage, sites,
agents, tokens and small WebSocket / long-poll clients that speak the frame protocol."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientWebSocketResponse, web

from kefu.core.domain import Agent, Site, new_id
from kefu.core.kernel import Kernel, load_kernel
from kefu.core.web_app import KERNEL_KEY, create_app
from kefu.plugins.auth.passwords import hash_password

PASSWORD = "correct horse battery staple"
FAST_HASH = hash_password(PASSWORD, 10)  # tests need speed, not strength


def make_kernel(tmp_path: Path, extra: str = "", extra_plugins: tuple = ()) -> Kernel:
    path = tmp_path / "kefu.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\nreload = false\n'
        '[storage]\nbackend = "memory"\n'
        "[auth]\npassword_cost = 10\n" + extra,
        encoding="utf-8",
    )
    return load_kernel(path, environ={}, entry_points=False, extra_plugins=extra_plugins)


@dataclass
class SiteFixture:
    site: Site
    admin: Agent
    agent: Agent


async def add_site(kernel: Kernel, site_id: str | None = None) -> SiteFixture:
    """A site with one admin and one agent, both with :data:`PASSWORD`."""
    site_id = site_id or f"site-{new_id()[:8]}"
    site = await kernel.storage.create_site(Site(site_id, site_id, widget_key=new_id()))
    admin = await kernel.storage.create_agent(
        Agent(new_id(), site_id, f"admin@{site_id}.test", "Ada", FAST_HASH, ["admin", "agent"])
    )
    agent = await kernel.storage.create_agent(
        Agent(new_id(), site_id, f"agent@{site_id}.test", "Bob", FAST_HASH, ["agent"])
    )
    return SiteFixture(site, admin, agent)


async def login(client: Any, site_id: str, email: str, password: str = PASSWORD) -> str:
    resp = await client.post(
        "/v1/auth/login", json={"site_id": site_id, "email": email, "password": password}
    )
    assert resp.status == 200, await resp.text()
    return (await resp.json())["token"]


async def visitor_session(client: Any, widget_key: str, token: str | None = None) -> dict:
    body = {"widget_key": widget_key, "referrer": "https://shop.test/", "page": "/cart"}
    if token:
        body["token"] = token
    resp = await client.post("/v1/visitors/session", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def app_kernel(app: web.Application) -> Kernel:
    return app[KERNEL_KEY]


async def start_client(aiohttp_client: Any, tmp_path: Path, extra: str = "") -> Any:
    """An aiohttp test client on a real socket for a fresh kernel."""
    return await aiohttp_client(create_app(make_kernel(tmp_path, extra)))


class WsPeer:
    """A WebSocket client that keeps every frame it receives, in order."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send_bytes(orjson.dumps(frame))

    async def expect(self, op: str, within: float = 3.0, **match: Any) -> dict:
        """The first unread frame with this ``op`` (and fields); other frames stay buffered."""
        async with asyncio.timeout(within):
            while True:
                for index, frame in enumerate(self.frames):
                    if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                        return self.frames.pop(index)
                msg = await self.ws.receive()
                if msg.type.name not in ("TEXT", "BINARY"):
                    raise ConnectionError(f"closed while waiting for {op!r}: {msg}")
                self.frames.append(orjson.loads(msg.data))

    async def quiet(self, seconds: float = 0.2) -> list[dict]:
        """Everything that arrives within ``seconds`` (used to prove nothing arrives)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    msg = await self.ws.receive()
                    if msg.type.name != "TEXT" and msg.type.name != "BINARY":
                        break
                    self.frames.append(orjson.loads(msg.data))
        except TimeoutError:
            pass
        return self.frames

    async def close(self) -> None:
        await self.ws.close()

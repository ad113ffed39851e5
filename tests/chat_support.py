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


def make_kernel(
    tmp_path: Path,
    extra: str = "",
    extra_plugins: tuple = (),
    storage: str = "memory",
    bus: str = "memory",
) -> Kernel:
    path = tmp_path / "kefu.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\nreload = false\n'
        f'[storage]\nbackend = "{storage}"\n[bus]\nbackend = "{bus}"\n'
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


async def add_owner(kernel: Kernel, site_id: str) -> Agent:
    """An install owner (role ``owner``: install-level administration) in ``site_id``."""
    return await kernel.storage.create_agent(
        Agent(
            new_id(),
            site_id,
            f"owner-{new_id()[:6]}@{site_id}.test",
            "Olga",
            FAST_HASH,
            ["owner", "admin", "agent"],
        )
    )


async def login(client: Any, site_id: str, email: str, password: str = PASSWORD) -> str:
    """Sign in; a ``503 busy`` (more logins at once than the server checks) is retried
    after its ``Retry-After``, as a console does."""
    body = {"site_id": site_id, "email": email, "password": password}
    for _ in range(30):
        resp = await client.post("/v1/auth/login", json=body)
        if resp.status == 503 and "Retry-After" in resp.headers:
            await asyncio.sleep(min(float(resp.headers["Retry-After"]), 2.0))
            continue
        break
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
        """Consume and return every unread frame, waiting ``seconds`` for more (used to prove
        that nothing arrives)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    msg = await self.ws.receive()
                    if msg.type.name not in ("TEXT", "BINARY"):
                        break
                    self.frames.append(orjson.loads(msg.data))
        except TimeoutError:
            pass
        frames, self.frames = self.frames, []
        return frames

    async def close(self) -> None:
        await self.ws.close()


async def ws_peer(client: Any, token: str, **kwargs: Any) -> WsPeer:
    """Connect to ``/v1/ws`` and consume the ``hello`` frame."""
    peer = WsPeer(await client.ws_connect(f"/v1/ws?token={token}", **kwargs))
    hello = await peer.expect("hello")
    assert hello["protocol"] == 1
    return peer


@dataclass
class Chat:
    """A site with a visitor tab and an agent, both over WebSocket, in one conversation."""

    site: SiteFixture
    visitor_token: str
    agent_token: str
    visitor: Any  # WsPeer | PollPeer
    agent: Any
    conversation_id: str


class PollPeer:
    """A long-poll client with the same interface as :class:`WsPeer`."""

    def __init__(self, client: Any, session: str) -> None:
        self.client = client
        self.session = session
        self.frames: list[dict] = []
        self.closed_with: str | None = None

    async def send(self, **frame: Any) -> None:
        await self.send_raw(orjson.dumps(frame))

    async def send_raw(self, body: bytes | str) -> None:
        resp = await self.client.post(f"/v1/poll/send?session={self.session}", data=body)
        assert resp.status == 202, await resp.text()

    async def recv(self, wait: float = 1.0) -> list[dict]:
        resp = await self.client.get(f"/v1/poll/recv?session={self.session}&timeout={wait}")
        if resp.status != 200:
            self.closed_with = (await resp.json())["error"]["code"]
            raise ConnectionError(f"recv: {resp.status} {self.closed_with}")
        frames = (await resp.json())["frames"]
        self.frames.extend(frames)
        return frames

    async def expect(self, op: str, within: float = 3.0, **match: Any) -> dict:
        async with asyncio.timeout(within):
            while True:
                for index, frame in enumerate(self.frames):
                    if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                        return self.frames.pop(index)
                await self.recv(1.0)

    async def quiet(self, seconds: float = 0.2) -> list[dict]:
        await self.recv(seconds)
        frames, self.frames = self.frames, []
        return frames

    async def close(self) -> None:
        await self.client.post(f"/v1/poll/close?session={self.session}")


async def poll_peer(client: Any, token: str) -> PollPeer:
    """Open a long-poll session and consume the ``hello`` frame."""
    resp = await client.post("/v1/poll/open", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()
    peer = PollPeer(client, (await resp.json())["session"])
    assert (await peer.expect("hello"))["protocol"] == 1
    return peer


async def connect(client: Any, token: str, transport: str = "ws") -> WsPeer | PollPeer:
    return await (ws_peer if transport == "ws" else poll_peer)(client, token)


async def open_chat(
    client: Any, site: SiteFixture | None = None, visitor_via: str = "ws", agent_via: str = "ws"
) -> Chat:
    """A visitor and an agent in one new conversation, the agent watching it."""
    kernel = app_kernel(client.app)
    site = site or await add_site(kernel)
    session = await visitor_session(client, site.site.widget_key)
    agent_token = await login(client, site.site.id, site.agent.email)
    agent = await connect(client, agent_token, agent_via)
    visitor = await connect(client, session["token"], visitor_via)
    await visitor.send(op="start")
    started = await visitor.expect("started")
    conversation_id = started["conversation"]["id"]
    await visitor.expect("queue", conversation_id=conversation_id)  # routing: nobody online
    await agent.expect("conversation", event="started")
    await agent.send(op="watch", conversation_id=conversation_id)
    await agent.expect("watching")
    return Chat(site, session["token"], agent_token, visitor, agent, conversation_id)

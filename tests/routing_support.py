"""Helpers for the live routing and agent-workflow tests: a kernel with routing settings,
agents with skills and capacity connected over WebSocket, visitors starting chats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kefu.core.domain import Agent, new_id
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.bus_memory import MemoryBus
from kefu.plugins.routing import service_of
from tests.chat_support import (
    FAST_HASH,
    SiteFixture,
    WsPeer,
    add_site,
    app_kernel,
    login,
    make_kernel,
    visitor_session,
    ws_peer,
)

#: Fast timers for tests; a test that needs one longer passes its own ``[routing]`` keys.
ROUTING = "[routing]\nsweep_interval_s = 0\naway_grace_s = 0.2\nanswer_timeout_s = 0\n"


async def routing_client(aiohttp_client: Any, tmp_path: Path, routing: str = ROUTING, **kw):
    """A test client whose kernel runs the given ``[routing]`` section (and more)."""
    kernel = make_kernel(tmp_path, routing + kw.pop("extra", ""), **kw)
    return await aiohttp_client(create_app(kernel))


async def add_agent(
    kernel: Any,
    site_id: str,
    name: str,
    *,
    capacity: int = 5,
    skills: tuple[str, ...] = (),
    roles: tuple[str, ...] = ("agent",),
) -> Agent:
    return await kernel.storage.create_agent(
        Agent(
            new_id(),
            site_id,
            f"{name.lower()}-{new_id()[:6]}@{site_id}.test",
            name,
            FAST_HASH,
            list(roles),
            capacity=capacity,
            skills=list(skills),
        )
    )


@dataclass
class Console:
    """An agent connected over WebSocket, with their token for REST calls."""

    agent: Agent
    token: str
    peer: WsPeer

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def online(self, status: str = "online", **extra: Any) -> None:
        await self.peer.send(op="presence", status=status, **extra)
        await self.peer.expect("presence_ok")

    async def assignment(self, within: float = 3.0, **match: Any) -> dict:
        return await self.peer.expect("assignment", within=within, **match)


async def console(client: Any, agent: Agent, *, online: bool = True) -> Console:
    token = await login(client, agent.site_id, agent.email)
    peer = await ws_peer(client, token)
    desk = Console(agent, token, peer)
    if online:
        await desk.online()
    return desk


@dataclass
class Visitor:
    token: str
    peer: WsPeer
    conversation_id: str = ""

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def visitor(client: Any, site: SiteFixture, department: str | None = None) -> Visitor:
    """A visitor who connected and started a conversation (``started`` consumed)."""
    session = await visitor_session(client, site.site.widget_key)
    peer = await ws_peer(client, session["token"])
    frame = {"op": "start"} if department is None else {"op": "start", "department": department}
    await peer.send(**frame)
    started = await peer.expect("started")
    return Visitor(session["token"], peer, started["conversation"]["id"])


async def joined(peer: Any, agent: Agent, within: float = 3.0) -> dict:
    """The visitor's ``agent_joined`` frame naming ``agent`` (earlier joins stay buffered)."""
    return await peer.expect(
        "agent_joined", within=within, agent={"id": agent.id, "name": agent.name}
    )


async def settle(client: Any) -> None:
    """Wait until no routing pass is pending."""
    await service_of(app_kernel(client.app)).settle()


async def site_of(client: Any) -> SiteFixture:
    return await add_site(app_kernel(client.app))


class Shared:
    """Offers one bus and one storage to every kernel it is registered in: several
    worker processes (``make_kernel(..., storage="shared", bus="shared")``)."""

    def __init__(self, make_storage) -> None:
        self.bus, self.make_storage = MemoryBus(), make_storage

    @hookimpl
    def kefu_bus_backends(self):
        return {"shared": lambda kernel: self.bus}

    @hookimpl
    def kefu_storage_backends(self):
        return {"shared": lambda kernel: self.make_storage()}


class Events:
    """A throw-away plugin that records every domain event."""

    def __init__(self) -> None:
        self.seen: list = []

    @hookimpl
    def kefu_event(self, kernel, event):
        self.seen.append(event)

    def of(self, type: str) -> list:
        return [e for e in self.seen if e.type == type]


@pytest.fixture
async def world(aiohttp_client, tmp_path):
    """A routing test app with an event recorder: ``(client, events)``."""
    events = Events()
    client = await routing_client(aiohttp_client, tmp_path, extra_plugins=(("ev", events),))
    return client, events

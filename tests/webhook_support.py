"""A real HTTP receiver for webhook tests: it checks every signature, can fail the first N
requests or hang, and keeps what it accepted in arrival order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from kefu.core.signing import HEADER, verify


@dataclass
class Received:
    delivery: str
    event_id: str
    event: str
    body: dict
    signed: bool


@dataclass
class Receiver:
    secret: str = ""
    fail_first: int = 0
    always_fail: bool = False
    hang_s: float = 0.0
    requests: list[Received] = field(default_factory=list)  # every request, failed too
    accepted: list[Received] = field(default_factory=list)
    failed: int = 0
    runner: web.AppRunner | None = None
    url: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        got = Received(
            request.headers["X-Kefu-Delivery"],
            request.headers["X-Kefu-Event-Id"],
            request.headers["X-Kefu-Event"],
            orjson.loads(raw),
            bool(self.secret) and verify(self.secret, request.headers.get(HEADER, ""), raw),
        )
        self.requests.append(got)
        self.changed.set()
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.always_fail or self.failed < self.fail_first:
            self.failed += 1
            return web.Response(status=500, text="not now")
        self.accepted.append(got)
        return web.Response(status=204)

    async def wait_for(self, check: Any, within: float, what: str) -> None:
        async with asyncio.timeout(within):
            while not check():
                self.changed.clear()
                try:
                    async with asyncio.timeout(0.2):
                        await self.changed.wait()
                except TimeoutError:
                    pass
        assert check(), what


def in_order_per_conversation(accepted: list[Received]) -> dict[str, list[Received]]:
    """Accepted events grouped by conversation, in arrival order."""
    out: dict[str, list[Received]] = {}
    for got in accepted:
        out.setdefault(got.body["data"].get("conversation_id"), []).append(got)
    return out

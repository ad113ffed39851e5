"""Long-poll sessions: one gateway connection each, polled over plain HTTP requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from kefu.core.web_app import bearer_token, error_response

log = logging.getLogger(__name__)

BATCH_BYTES = 8  # a send body may be 8 x max_frame_bytes (the gateway checks each frame)


class Session:
    __slots__ = ("conn", "id", "last_seen", "polling")

    def __init__(self, conn: Any) -> None:
        self.id = secrets.token_urlsafe(24)
        self.conn = conn
        self.last_seen = time.monotonic()
        self.polling = 0  # recv requests in flight


class LongPoll:
    """The sessions of one kernel and the four HTTP handlers."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.sessions: dict[str, Session] = {}
        self._sweeper: asyncio.Task | None = None

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("transport_longpoll")

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="kefu-longpoll-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.end_all("shutdown")

    async def end_all(self, reason: str) -> None:
        """End every session, waking its pending receive."""
        for session in list(self.sessions.values()):
            await self._end(session, reason)

    async def _sweep(self) -> None:
        while True:
            idle = self.settings.idle_timeout
            await asyncio.sleep(min(idle / 4, 5.0))
            cutoff = time.monotonic() - idle
            for session in list(self.sessions.values()):
                if session.last_seen < cutoff and not session.polling:
                    await self._end(session, "idle_timeout")

    async def _end(self, session: Session, reason: str) -> None:
        self.sessions.pop(session.id, None)
        gateway = getattr(self.kernel, "gateway", None)
        if gateway is not None:
            await gateway.close(session.conn, reason)
        else:
            session.conn.close(reason)

    async def _session(self, request: web.Request) -> Session | web.Response:
        session = self.sessions.get(request.query.get("session", ""))
        if session is None:
            return error_response(404, "session_not_found", "unknown or expired session; open one")
        session.last_seen = time.monotonic()
        if session.conn.closed:
            reason = session.conn.close_reason or "closed"
            await self._end(session, reason)
            return error_response(410, reason, "the session was closed; open a new one and resume")
        return session

    # -- handlers -------------------------------------------------------------------
    async def open(self, request: web.Request) -> web.Response:
        gateway = getattr(self.kernel, "gateway", None)
        if gateway is None:
            return error_response(503, "unavailable", "the gateway plugin is not running")
        token = bearer_token(request)
        if token is None and request.can_read_body:
            with contextlib.suppress(ValueError):
                body = orjson.loads(await request.read())
                token = body.get("token") if isinstance(body, dict) else None
        principal = await gateway.authenticate(request, token if isinstance(token, str) else None)
        if principal is None:
            return error_response(401, "invalid_token", "the token is missing, invalid or expired")
        conn = await gateway.open(principal, "longpoll", remote=request.remote)
        session = Session(conn)
        self.sessions[session.id] = session
        s = self.settings
        return web.json_response(
            {
                "session": session.id,
                "connection_id": conn.id,
                "recv_timeout": s.recv_timeout,
                "idle_timeout": s.idle_timeout,
            }
        )

    async def send(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        if isinstance(session, web.Response):
            return session
        gateway = self.kernel.gateway
        limit = gateway.settings.max_frame_bytes * BATCH_BYTES
        too_large = error_response(413, "frame_too_large", f"a send is limited to {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            return too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        await gateway.receive(session.conn, body, batch=True)
        return web.json_response({"ok": True}, status=202)

    async def recv(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        if isinstance(session, web.Response):
            return session
        try:
            wanted = float(request.query.get("timeout", self.settings.recv_timeout))
        except ValueError:
            return error_response(400, "invalid_field", "timeout must be a number of seconds")
        wait = min(max(wanted, 0.0), self.settings.recv_timeout)
        conn = session.conn
        session.polling += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await conn.wait()
        finally:
            session.polling -= 1
            session.last_seen = time.monotonic()
        if conn.closed:
            return await self._session(request)  # answers 410 with the reason
        transport = request.transport
        if transport is None or transport.is_closing():
            return web.Response(status=499)  # client gone: leave the frames for the next recv
        frames = conn.drain(self.settings.max_frames_per_recv)
        body = b'{"frames":[' + b",".join(frames) + b"]}"
        return web.Response(body=body, content_type="application/json")

    async def close(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.query.get("session", ""))
        if session is not None:
            await self._end(session, "client_closed")
        return web.json_response({"ok": True})

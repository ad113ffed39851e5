"""WebSocket transport: ``GET /v1/ws?token=...`` carrying gateway frames as JSON text.

Compression is off by default (per connection about 14 KiB instead of about
105 KiB with deflate, DESIGN.md section 6) and ``max_msg_size`` is small. A
frame above the gateway's ``max_frame_bytes`` but within ``max_msg_size`` is
refused with a ``frame_too_large`` error frame and the connection stays; a
frame above ``max_msg_size`` closes it (1009). The writer watches the socket's
write buffer: a client that stops reading is closed as a slow consumer and
recovers by reconnecting and resuming.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import WSMsgType, web
from pydantic import Field

from kefu.core.config import Section
from kefu.core.types import DegradableFeature, TransportInfo
from kefu.core.web_app import bearer_token, error_response
from kefu.hooks import hookimpl

from .heartbeat import Heartbeats
from .inbound import DirectWebSocket
from .pump import Pump

log = logging.getLogger(__name__)


PATH = "/v1/ws"

#: WebSocket close codes per close reason (docs/protocol.md).
CLOSE_CODES = {
    "client_closed": 1000,
    "shutdown": 1001,
    "invalid_token": 4401,
    "revoked": 4403,
    "slow_consumer": 4408,
    "flood": 4429,
}
FATAL_MESSAGES = {
    "invalid_token": "the token is missing, forged, expired or of an unknown site",
    "revoked": "your session ended (signed out, password changed, disabled or deleted); "
    "sign in again",
    "shutdown": "the server is stopping; reconnect and resume",
    "slow_consumer": "you did not read fast enough; reconnect and resume",
    "flood": "too many frames past the rate limit",
}


class WsSettings(Section):
    """The ``[transport_ws]`` section."""

    #: Hard cap of one incoming WebSocket message; larger ones close the connection.
    max_msg_size: int = Field(128 * 1024, ge=1024)
    #: Seconds of silence before a protocol ping; a peer that does not answer within half
    #: of it is dropped (one timer wheel for every connection: heartbeat.py).
    heartbeat: float = Field(30.0, gt=0)
    #: The same while ``ws_pings`` is shed under pressure (degradation level 1).
    heartbeat_shed: float = Field(90.0, gt=0)
    #: permessage-deflate; off by default because it costs memory per connection.
    compress: bool = False
    #: Bytes queued in the socket's write buffer before the writer waits for it to drain.
    write_buffer_limit: int = Field(256 * 1024, ge=1024)
    #: Seconds a client may leave the buffer full before it is closed as a slow consumer.
    send_timeout: float = Field(10.0, gt=0)


@hookimpl
def kefu_config_schema():
    return {"transport_ws": WsSettings}


@hookimpl
def kefu_transport_adapters(kernel):
    return [TransportInfo("ws", PATH, "WebSocket, JSON text frames")]


def _heartbeats(kernel) -> Heartbeats:
    def interval(stretched: bool) -> float:
        s = kernel.config.section("transport_ws")
        return s.heartbeat_shed if stretched else s.heartbeat

    return kernel.plugin_state("transport_ws.heartbeats", lambda _k: Heartbeats(interval))


@hookimpl
def kefu_degradation_features(kernel):
    heartbeats = _heartbeats(kernel)

    def set_enabled(enabled: bool) -> None:
        heartbeats.stretched = not enabled

    return [
        DegradableFeature(
            "ws_pings", 45, set_enabled, 1, "server pings every heartbeat_shed (90 s), not 30 s"
        )
    ]


@hookimpl
def kefu_routes(kernel):
    heartbeats = _heartbeats(kernel)

    async def websocket(request: web.Request) -> web.StreamResponse:
        gateway = kernel.gateway
        if gateway is None:
            return error_response(503, "unavailable", "the gateway plugin is not running")
        s = kernel.config.section("transport_ws")
        # pings and pongs are ours (autoping off): one wheel times every connection
        ws = DirectWebSocket(
            compress=s.compress, max_msg_size=s.max_msg_size, heartbeat=None, autoping=False
        )
        token = bearer_token(request)
        principal = await gateway.authenticate(request, token)
        await ws.prepare(request)
        if principal is None:
            await _close(ws, request, "invalid_token", send_timeout=1.0)
            return ws
        conn = await gateway.open(principal, "ws", remote=request.remote, credential=token)
        pump = Pump(
            conn,
            request,
            s.write_buffer_limit,
            lambda: _drain_within(request, s),
            lambda reason: _close(ws, request, reason),
        )
        beat = heartbeats.add(ws, request, s.heartbeat, lambda: _dead(request, conn))
        clock = asyncio.get_running_loop().time

        def seen() -> None:
            beat.seen = clock()

        def frame(data: str | bytes) -> None:
            beat.seen = clock()
            gateway.feed(conn, data)

        # data frames go to the gateway as they are parsed; this loop sees the rest
        ws.direct(frame, seen)
        try:
            async for msg in ws:
                beat.seen = clock()
                kind = msg.type
                if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                    await gateway.receive(conn, msg.data)
                elif kind is WSMsgType.PING:
                    await ws.pong(msg.data)
                if conn.closed:
                    break
        finally:
            ws.detach()
            beat.gone = True
            await gateway.close(conn, "client_closed")  # keeps an earlier, better reason
            await pump.finished()
        return ws

    return [web.get(PATH, websocket)]


async def _drain_within(request: web.Request, s: WsSettings) -> None:
    """Wait, at most ``send_timeout``, until the socket's buffer is back under its limit."""
    async with asyncio.timeout(s.send_timeout):
        await _drain(request, s.write_buffer_limit)


def _dead(request: web.Request, conn) -> None:
    """A peer that did not answer a ping: drop the socket, as aiohttp's heartbeat does."""
    conn.close("client_closed")
    if request.transport is not None:
        request.transport.abort()


async def _drain(request: web.Request, limit: int) -> None:
    """Wait while the kernel-side write buffer holds more than ``limit`` bytes."""
    transport = request.transport
    while transport is not None and transport.get_write_buffer_size() > limit:
        if transport.is_closing():
            raise ConnectionError("transport closing")
        await asyncio.sleep(0.02)


async def _close(
    ws: web.WebSocketResponse, request: web.Request, reason: str, send_timeout: float = 1.0
) -> None:
    """Tell the client why (an ``error`` frame for a fatal reason), then close with a code."""
    if ws.closed:
        return
    try:
        async with asyncio.timeout(send_timeout):
            if reason in FATAL_MESSAGES:
                frame = {
                    "op": "error",
                    "code": reason,
                    "message": FATAL_MESSAGES[reason],
                    "fatal": True,
                }
                await ws.send_frame(orjson.dumps(frame), WSMsgType.TEXT)
            await ws.close(code=CLOSE_CODES.get(reason, 1000), message=reason.encode())
    except (TimeoutError, ConnectionError, RuntimeError):
        if request.transport is not None:
            request.transport.abort()

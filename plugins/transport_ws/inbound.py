"""Reading a WebSocket without a coroutine chain per message (issue 11).

aiohttp hands every parsed frame to a queue (``WebSocketDataQueue``) that the handler
reads with ``async for msg in ws``: per frame received, the handler's task wakes and
builds a new ``receive()`` / ``read()`` chain and a future to wait on the next one. With
5,000 chatting visitors those chains live for the seconds between a visitor's messages,
long enough to outlive the young collections, so the collector walks about 70,000 of
them in every older-generation pass (docs/performance.md, "Where the tail is").

:class:`DirectWebSocket` gives aiohttp's parser a queue whose ``feed_data`` hands text
and binary frames to a callback at once, inside the protocol's ``data_received`` (the
gateway's ``feed`` queues them for the connection's worker without waiting), and marks
pongs seen without waking anyone. What is left for the handler's ``receive()`` is the
rare rest: close frames, pings from the client, errors and the end of the stream, so a
connection's handler waits on one future for its whole life (frozen by the collector's
periodic freeze with the rest of the connection).

Frames that arrive before :meth:`DirectWebSocket.direct` is called (between the
handshake and the gateway's ``open``) stay queued; if any did, the connection keeps
aiohttp's ordinary reading so that they are not overtaken (``direct`` returns False).

This overrides ``WebSocketResponse._post_start``, a private method, to build the
queue; the test suite checks the direct path is taken (tests/test_ws_inbound.py),
so an aiohttp that changes it fails there, not silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

try:  # aiohttp >= 3.11 (the queue and the parser of aiohttp._websocket)
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
except ImportError:  # pragma: no cover - older aiohttp: ordinary reading only
    WebSocketDataQueue = WebSocketReader = None

_TEXT, _BINARY, _PONG = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PONG
#: The queue's limit (bytes) before aiohttp pauses reading, as aiohttp's own.
QUEUE_LIMIT = 2**16

if WebSocketDataQueue is not None:

    class _Inbound(WebSocketDataQueue):
        """aiohttp's queue, with data frames and pongs handed over instead of queued."""

        __slots__ = ("on_frame", "on_pong")

        def __init__(self, protocol: Any, limit: int, *, loop: Any) -> None:
            super().__init__(protocol, limit, loop=loop)
            self.on_frame: Callable[[Any], None] | None = None
            self.on_pong: Callable[[], None] | None = None

        def feed_data(self, data: Any, size: int) -> None:
            kind = data[0]
            if kind is _TEXT or kind is _BINARY:
                on_frame = self.on_frame
                if on_frame is not None:
                    try:
                        on_frame(data[1])
                    except Exception:  # inside data_received: log, drop this socket only
                        log.exception("websocket frame handler failed")
                        transport = self._protocol.transport
                        if transport is not None:
                            transport.abort()
                    return
            elif kind is _PONG:
                on_pong = self.on_pong
                if on_pong is not None:
                    on_pong()
                    return
            super().feed_data(data, size)

else:  # pragma: no cover
    _Inbound = None


class DirectWebSocket(web.WebSocketResponse):
    """A ``WebSocketResponse`` whose data frames can go straight to a callback."""

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        if _Inbound is None:  # pragma: no cover
            super()._post_start(request, protocol, writer)
            return
        # aiohttp's _post_start, with our queue in place of WebSocketDataQueue
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        self._reader = _Inbound(request._protocol, QUEUE_LIMIT, loop=self._loop)
        self._parser = WebSocketReader(
            self._reader,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
        )
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=callback)
        request.protocol.keep_alive(False)

    def direct(self, on_frame: Callable[[Any], None], on_pong: Callable[[], None]) -> bool:
        """From now on hand data frames to ``on_frame`` and pongs to ``on_pong``.

        False (nothing changed) when frames are already queued: they would be overtaken.
        ``on_frame`` runs inside the protocol's ``data_received``: it must not block and
        must not raise (an exception is logged and the socket aborted)."""
        queue = self._inbound()
        if queue is None or queue._buffer:
            return False
        queue.on_frame, queue.on_pong = on_frame, on_pong
        return True

    def detach(self) -> None:
        """Drop the callbacks (at the connection's end): they reference the connection,
        which references this socket's protocol, a cycle the frozen generation would keep."""
        queue = self._inbound()
        if queue is not None:
            queue.on_frame = queue.on_pong = None

    def _inbound(self) -> Any:
        """The direct queue, or None (not prepared, or aiohttp without one)."""
        queue = self._reader
        return queue if _Inbound is not None and isinstance(queue, _Inbound) else None

"""Writing a connection's outbox to its WebSocket without a task per connection.

The gateway queues serialised frames on the :class:`Connection`; the connection calls
:meth:`Pump.wake` for each. The first wake of a loop tick puts the pump on the tick's
list (one callback per tick flushes every pump on it, :class:`_Flusher`), and its
:meth:`Pump.flush` writes every frame queued meanwhile as WebSocket frames in
one ``transport.write`` (one system call for what a tick produced for that client).
Only a client that stops reading costs a task: when the socket's buffer holds more
than ``write_buffer_limit`` bytes, a task waits up to ``send_timeout`` for it to drain
and closes the connection as a slow consumer otherwise. An idle connection holds no
task and no timer (the heartbeat is one wheel for all, heartbeat.py).

Frames are written to the transport directly (server frames are unmasked, RFC 6455
section 5.2); aiohttp's writer still sends pings, pongs and the close frame on the same
transport, whole frames each, from the same thread, so frames never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_TEXT = 0x81  # FIN + text opcode
_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack


class _Flusher:
    """The pumps woken during one loop tick, flushed by one callback at the next turn.

    One ``call_soon`` per tick for every connection written to, instead of a handle per
    connection: at 2,000 messages per second that is two pumps (the sender's ack, the
    receiver's message) per message sharing a callback."""

    __slots__ = ("_due", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[Pump] = []
        self._scheduled = False

    def add(self, pump: Pump) -> None:
        self._due.append(pump)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        due, self._due = self._due, []
        for pump in due:  # a pump woken by its own flush goes to the next turn's list
            try:
                pump.flush()
            except Exception:  # one broken socket must not keep the others unwritten
                log.exception("websocket flush failed for %r", pump.conn)


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    found = _FLUSHERS.get(loop)
    if found is None:
        found = _FLUSHERS[loop] = _Flusher(loop)
    return found


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 65536:
        return _LEN2(_TEXT, 126, n) + payload
    return _LEN8(_TEXT, 127, n) + payload


class Pump:
    """The outbox of one connection, written on the loop's next turn."""

    __slots__ = (
        "_close",
        "_drain",
        "_flusher",
        "_limit",
        "_loop",
        "_scheduled",
        "_slow",
        "closed",
        "conn",
        "request",
    )

    def __init__(
        self,
        conn: Any,
        request: Any,
        limit: int,
        drain: Callable[[], Awaitable[None]],
        close: Callable[[str], Awaitable[None]],
    ) -> None:
        self.conn, self.request, self._limit = conn, request, limit
        self._drain, self._close = drain, close
        self._loop = asyncio.get_running_loop()
        self._flusher = _flusher(self._loop)
        self._scheduled = False
        self._slow: asyncio.Task | None = None
        #: the task that closes the socket once the connection closed (awaited by the reader)
        self.closed: asyncio.Task | None = None
        conn.on_push = self.wake
        if conn.queued or conn.closed:
            self.wake()

    def wake(self) -> None:
        if not self._scheduled and self._slow is None and self.closed is None:
            self._scheduled = True
            self._flusher.add(self)

    def flush(self) -> None:
        self._scheduled = False
        conn = self.conn
        if conn.closed:
            self._finish()
            return
        transport = self.request.transport
        if transport is None or transport.is_closing():
            conn.close("client_closed")
            return  # (close wakes us again: _finish)
        if transport.get_write_buffer_size() > self._limit:
            self._slow = self._loop.create_task(self._wait_for_room())
            return
        frames = conn.drain()
        if frames:
            transport.write(b"".join([ws_frame(f) for f in frames]))
        if conn.queued:  # more than one drain's worth
            self.wake()

    async def _wait_for_room(self) -> None:
        try:
            await self._drain()
        except TimeoutError:
            self.conn.close("slow_consumer")
        except (ConnectionError, RuntimeError):
            self.conn.close("client_closed")
        finally:
            self._slow = None
        self.flush()

    async def finished(self) -> None:
        """Once the connection closed: until the socket was closed with its reason."""
        self.flush()  # (the close is picked up now, not on the next turn)
        if self.closed is not None:
            await self.closed

    def _finish(self) -> None:
        if self.closed is None:
            self.conn.on_push = None
            reason = self.conn.close_reason or "client_closed"
            self.closed = self._loop.create_task(self._close(reason))

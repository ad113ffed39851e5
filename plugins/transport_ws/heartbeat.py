"""One heartbeat timer for every WebSocket of a process: a wheel of one-second slots.

aiohttp's own heartbeat keeps a timer per connection and re-arms it on every message
received; with thousands of connections that is a timer operation per message and a
timer callback per connection per interval. Here a connection costs one float written
per message received (:attr:`Beat.seen`), and one task visits, once a second, only the
connections that are due: a connection silent for ``interval`` seconds is pinged; one
that then stays silent for another half interval (no pong, no frame) is dead, as with
aiohttp's ``heartbeat``.

Under pressure the transport's ``ws_pings`` feature (degradation level 1) sets
:attr:`Heartbeats.stretched`: the interval becomes the ``[transport_ws] heartbeat_shed``
one (read at every turn of the wheel), so the server pings its idle connections less.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Seconds per slot of the wheel (the precision of the heartbeat).
TICK = 1.0
#: Connections visited before the wheel lets other callbacks run.
VISITS_PER_TURN = 200


class Beat:
    """One connection on the wheel."""

    __slots__ = ("gone", "on_dead", "pinged_at", "request", "seen", "ws")

    def __init__(self, ws: Any, request: Any, on_dead: Callable[[], None], now: float) -> None:
        self.ws, self.request = ws, request
        self.on_dead = on_dead
        self.seen = now  # loop time of the last frame received (the reader writes it)
        self.pinged_at: float | None = None
        self.gone = False


class Heartbeats:
    """The wheel of one process (one kernel): ``add`` on connect, ``Beat.gone`` on close."""

    def __init__(self, interval: Callable[[bool], float] | None = None) -> None:
        self._slots: dict[int, list[Beat]] = {}
        self._task: asyncio.Task | None = None
        self.pings = self.dead = 0
        #: True while the ``ws_pings`` feature is shed: ``interval(True)`` is used
        self.stretched = False
        #: the interval in force, given ``stretched`` (None: the one ``add`` was given)
        self._interval = interval

    def interval(self, fallback: float) -> float:
        return fallback if self._interval is None else self._interval(self.stretched)

    def add(self, ws: Any, request: Any, interval: float, on_dead: Callable[[], None]) -> Beat:
        loop = asyncio.get_running_loop()
        beat = Beat(ws, request, on_dead, loop.time())
        self._place(beat, beat.seen + self.interval(interval))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(interval), name="kefu-ws-heartbeat")
        return beat

    def _place(self, beat: Beat, due: float) -> None:
        self._slots.setdefault(math.ceil(due / TICK), []).append(beat)

    async def _run(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while self._slots:
            await asyncio.sleep(TICK)
            interval = self.interval(interval)
            now = loop.time()
            current = math.floor(now / TICK)
            visited = 0
            for slot in [s for s in self._slots if s <= current]:
                for beat in self._slots.pop(slot):
                    try:
                        await self._visit(beat, now, interval)
                    except Exception:  # one connection's trouble is not the wheel's
                        log.debug("heartbeat of a connection failed", exc_info=True)
                    visited += 1
                    if visited % VISITS_PER_TURN == 0:
                        # a ramp of 2,000 connections a second fills one slot with 2,000
                        # pings (a write each): 60-100 ms of loop without a turn for others
                        await asyncio.sleep(0)

    async def _visit(self, beat: Beat, now: float, interval: float) -> None:
        if beat.gone or beat.ws.closed:
            return
        if beat.pinged_at is not None:
            if beat.seen > beat.pinged_at:  # it answered (a pong or any frame)
                beat.pinged_at = None
            else:
                beat.gone = True
                self.dead += 1
                beat.on_dead()
                return
        if now - beat.seen < interval:
            self._place(beat, beat.seen + interval)
            return
        transport = beat.request.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            # frames are waiting to be read (the send timeout watches that): look again
            # in a second rather than declare it dead for a ping it could not get
            self._place(beat, now + TICK)
            return
        await beat.ws.ping()  # nothing is buffered: written at once, cannot wait
        self.pings += 1
        beat.pinged_at = now
        self._place(beat, now + interval / 2)

"""Event-loop lag: a small task sleeps ``interval`` seconds and records how late it woke up.

Whatever holds the loop (a long callback, a garbage-collection pause, CPU
starvation) delays the wake-up by as much, so the overshoot measures the delay
every other task saw at that moment. The cost is one timer per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from kefu.core.stats import Histogram


class LoopLagProbe:
    """A histogram of the lag, and its maximum over a sliding window of two half-slots."""

    def __init__(self, interval: float, window: float, buckets: list[float]) -> None:
        self.interval = interval
        self.histogram = Histogram(buckets)
        self._half = window / 2
        self._slot_end = 0.0
        self._current = self._previous = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kefu-metrics-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.record(max(0.0, now - due), now)

    def record(self, lag: float, now: float) -> None:
        self.histogram.observe(lag)
        self._rotate(now)
        if lag > self._current:
            self._current = lag

    def _rotate(self, now: float) -> None:
        if now < self._slot_end:
            return
        # the slot that just ended becomes the previous one, unless it ended long ago
        self._previous = self._current if now - self._slot_end < self._half else 0.0
        self._current = 0.0
        self._slot_end = now + self._half

    def max_lag(self, now: float) -> float:
        self._rotate(now)
        return max(self._current, self._previous)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "event_loop_lag_seconds": self.histogram.snapshot(),
            "event_loop_lag_max_seconds": self.max_lag(now),
        }

"""The garbage collector's settings that bound the event loop's pauses (issue 11).

CPython's full (generation-2) collection walks every tracked object that is not
frozen, on the loop's thread: with 15,000 connections held that is a stall of a few
hundred milliseconds (docs/performance.md, "GC pauses (issue 11)"). Three things keep
collections short; the two settings are under ``[server]`` (docs/configuration.md):

- ``gc_thresholds``: ``gc.set_threshold`` at start-up. The default is Python's
  (700, 10, 10), measured against larger ones: a larger first threshold means fewer
  young collections under message load, but each one frees more garbage cycles and
  holds more survivors, and from 2,000 up the young collections became the longest
  pauses. A third threshold of 10 keeps full collections, short once long-lived objects
  are frozen, frequent enough to reclaim cycles before a freeze could strand them.
- the start-up freeze: ``gc.collect()`` then ``gc.freeze()`` once every plugin has
  started, so start-up objects leave the generations.
- ``gc_freeze_interval_s``: every so many seconds :class:`GcFreezer` reads one counter
  and, once the process grew by :data:`FREEZE_AFTER_BLOCKS` memory blocks since the last
  freeze (connections opened), collects the young generations (``gc.collect(1)``) and
  freezes what survived: long-lived connection objects leave the generations, so a full
  collection walks only what is newer.

The price of freezing: a frozen object is never examined by the collector again, so a
reference cycle that was alive when it was frozen and dies later is never reclaimed
(objects without cycles are freed by reference counting as usual). Objects that live
long should therefore not die in cycles: break them on close, as asyncio and aiohttp do
between a protocol and its transport. ``tests/bench/gc_bench.py`` measures what
freezing strands.

Why growth and not the collector's counters: freezing when the generation-2 counter was
about to reach its threshold missed full collections during a ramp of connections (two
of them, 89 ms of CPU the longer, in the bench's run); growth since the last freeze is
what such a collection would walk.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


def apply_thresholds(thresholds: Sequence[int]) -> None:
    """``gc.set_threshold(*thresholds)``."""
    if tuple(thresholds) != gc.get_threshold():
        log.debug("gc thresholds %s -> %s", gc.get_threshold(), tuple(thresholds))
        gc.set_threshold(*thresholds)


def freeze_start_up() -> None:
    """Collect everything once, then freeze the survivors (start-up is done)."""
    gc.collect()
    gc.freeze()


#: A full collection longer than this (seconds) makes :class:`GcFreezer` freeze at its
#: next check, however the process's size moved (docs/performance.md, GC pauses).
SLOW_FULL_COLLECTION = 0.025

#: Memory blocks allocated since the last freeze past which :class:`GcFreezer` freezes:
#: that much growth is mostly new long-lived objects (connections opening), which every
#: full collection would otherwise walk, some tens of milliseconds' worth.
FREEZE_AFTER_BLOCKS = 200_000


class GcFreezer:
    """Keeps full collections short by freezing the long-lived objects they would walk.

    :meth:`check` is what the periodic task calls: it reads the process's allocated
    memory blocks (``sys.getallocatedblocks``, a counter) and, once they grew by more
    than ``freeze_after_blocks`` from their lowest point since the last freeze, collects
    the young generations (``gc.collect(1)``, short: young garbage is collected, not
    frozen) and freezes the rest. When the process does not grow, nothing is frozen:
    the full collections that come walk only what is not frozen, which stays small, and
    reclaim its cycles.

    Growth counts from the lowest point, not from the freeze: after 15,000 connections
    closed (their frozen objects freed by reference counting), a new population of
    5,000 chats re-used the freed blocks without ever passing the count at the last
    freeze, so nothing froze it and every full collection walked its 450,000 objects,
    200-340 ms each during a 2,000 msg/s chat (tests/bench ``--scenario idle --scenario
    chat``, docs/performance.md). When blocks are freed and allocated at the same pace
    (old visitors' objects leaving a cache as new ones arrive) the count can stay flat
    while the unfrozen part grows: so a full collection that took longer than
    ``slow_full_s`` (timed by a ``gc.callbacks`` entry while :meth:`run` runs) makes the
    next check freeze too.
    """

    def __init__(
        self,
        freeze_after_blocks: int = FREEZE_AFTER_BLOCKS,
        slow_full_s: float = SLOW_FULL_COLLECTION,
    ) -> None:
        self.freeze_after_blocks = freeze_after_blocks
        self.slow_full_s = slow_full_s
        self.freezes = 0
        self.slow_full = False  # a full collection took longer than slow_full_s
        self._full_started = 0.0
        self._low = sys.getallocatedblocks()  # the fewest blocks seen since the last freeze

    def due(self) -> bool:
        blocks = sys.getallocatedblocks()
        if blocks < self._low:
            self._low = blocks
        return self.slow_full or blocks - self._low > self.freeze_after_blocks

    def timed(self, phase: str, info: dict) -> None:
        """The ``gc.callbacks`` entry: times full collections (generation 2)."""
        if info["generation"] != 2:
            return
        now = time.perf_counter()
        if phase == "start":
            self._full_started = now
        elif now - self._full_started > self.slow_full_s:
            self.slow_full = True

    def freeze(self) -> None:
        gc.collect(1)
        gc.freeze()
        self.freezes += 1
        self.slow_full = False
        self._low = sys.getallocatedblocks()

    def check(self) -> bool:
        """Freeze if the process grew enough since the last freeze; True when it did."""
        if not self.due():
            return False
        self.freeze()
        return True

    async def run(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds until cancelled (full collections timed)."""
        gc.callbacks.append(self.timed)
        try:
            while True:
                await asyncio.sleep(interval_s)
                self.check()
        finally:
            gc.callbacks.remove(self.timed)

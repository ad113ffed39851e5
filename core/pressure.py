"""The pressure level the kernel exposes, and the meters hot paths feed (issue 16).

A degradation plugin (the built-in ``degradation``) senses pressure and sets
:attr:`kefu.core.kernel.Kernel.pressure` to an object of the :class:`Pressure`
protocol while it runs; with none enabled the kernel keeps :data:`STEADY`
(level 0, always). Code on a hot path reads ``kernel.pressure.level``, an int
attribute: one attribute read per frame, never a hook call.

Levels (docs/degradation.md): 0 normal, 1 shed the ephemeral extras (typing and
presence coalesced, read receipts dropped, heartbeat and long-poll intervals stretched,
smaller history pages), 2 refuse new sessions politely and switch the bot's enrichments
off, 3 stop taking new connections and close the slowest consumers. Message persistence, acks
and delivery to connected participants are never shed at any level.

The meters are what the sensors read. They belong to the process, not to a kernel:
a queue's sojourn time or a batch's latency is a fact of the worker process whatever
kernel runs in it. :class:`SojournMeter` follows CoDel (Nichols and Jacobson, "Controlling
Queue Delay", 2012): the *minimum* time spent queued over an interval says whether a
queue stands (every item waited) or only bursts (some went straight through).
:class:`BatchMeter` keeps a batch's latency against its own recent minimum, so a slow
disk or a remote database is judged against itself, not against a constant.
:class:`Tally` counts the work offered (frames received).
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any, Protocol, runtime_checkable

#: The highest level; levels are 0..MAX_LEVEL.
MAX_LEVEL = 3


@runtime_checkable
class Pressure(Protocol):
    """The current degradation level of this worker and what it is made of."""

    #: 0 (normal) .. :data:`MAX_LEVEL`; read on hot paths, so it is a plain attribute.
    level: int

    def snapshot(self) -> dict[str, Any]:
        """The level, each sensor's reading, the features shed and the override, as JSON
        (the admin status page, ``GET /v1/admin/degradation``)."""

    async def override(self, level: int | None, ttl_s: float, by: str | None = None) -> None:
        """Hold ``level`` for ``ttl_s`` seconds in every worker (None: back to sensing)."""


class Steady:
    """The pressure of a kernel with no degradation plugin: level 0, always."""

    level = 0

    def snapshot(self) -> dict[str, Any]:
        return {"enabled": False, "level": 0, "sensors": {}, "shed": [], "override": None}

    async def override(self, level: int | None, ttl_s: float, by: str | None = None) -> None:
        raise RuntimeError("no degradation plugin is enabled: nothing can hold a level")


STEADY = Steady()


# ---------------------------------------------------------------------------
# meters fed by hot paths
# ---------------------------------------------------------------------------

#: Every live meter of this process, ``sojourn:NAME`` / ``latency:NAME`` (a name used
#: twice keeps the newest).
_meters: weakref.WeakValueDictionary[str, SojournMeter | BatchMeter | Tally] = (
    weakref.WeakValueDictionary()
)


def meters() -> dict[str, SojournMeter | BatchMeter | Tally]:
    """The live meters of this process: ``{"sojourn:storage.kefu-sql-append": meter, ...}``."""
    return dict(_meters)


class Tally:
    """A count of work offered to this process (frames received), bumped on a hot path.

    The degradation sensors turn it into a rate (``inflow_per_s``): shedding makes the
    other readings calm while the offered work stays the same, so a level is left only
    once the inflow fell as well (docs/degradation.md "Hysteresis"), not merely because
    shedding worked.
    """

    __slots__ = ("__weakref__", "count", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0  # incremented where the work arrives: ``tally.count += n``
        _meters[f"tally:{name}"] = self


class SojournMeter:
    """The minimum sojourn time of a queue since the last :meth:`take` (CoDel's signal).

    A queue calls :meth:`record` with how long a departing item waited; a group commit
    records each batch's *oldest* item (its freshest one always waited about nothing,
    batch or no queue); the sensor calls :meth:`take` every interval: the minimum over
    the interval stays low through a burst (some batch went through at once) and
    rises only when every batch waited, a standing queue. ``None`` from :meth:`take`
    means nothing left the queue meanwhile: the sensor then looks at :attr:`oldest`, the
    arrival time of the item waiting the longest (0 when empty), since a queue that
    stopped moving records nothing.
    """

    __slots__ = ("__weakref__", "_done", "_min", "flight", "name", "oldest", "records")

    def __init__(self, name: str) -> None:
        self.name = name
        self._min = math.inf
        self._done = math.inf
        self.oldest = 0.0
        #: arrival time of the newest item of the batch being served (0: none in service)
        self.flight = 0.0
        self.records = 0
        _meters[f"sojourn:{name}"] = self

    def record(self, sojourn_s: float) -> None:
        if sojourn_s < self._min:
            self._min = sojourn_s
        self.records += 1

    def take(self) -> float | None:
        """The minimum recorded since the last call (None: nothing left the queue)."""
        value, self._min = self._min, math.inf
        return None if value == math.inf else value

    def done(self, delay_s: float) -> None:
        """A batch was served: ``delay_s`` is its *newest* item's whole time in the queue
        and in service (arrival to commit). Every item of the batch waited at least that."""
        if delay_s < self._done:
            self._done = delay_s

    def take_delay(self, now: float | None = None) -> float:
        """The delay no item escaped since the last call: the smallest :meth:`done` of the
        interval; with none, how long the newest item in service has been in (it will
        have been at least that), else how long the oldest waiting item has waited (0:
        an idle queue). Under group commit a message overload grows the batches and the
        commit with them, not the wait beyond the commit: this reading sees it, the
        sojourn less the service time does not (docs/degradation.md ``store_ms``)."""
        value, self._done = self._done, math.inf
        if value != math.inf:
            return value
        now = time.monotonic() if now is None else now
        if self.flight:
            return now - self.flight
        return self.waiting_s(now)

    def waiting_s(self, now: float | None = None) -> float:
        """How long the oldest waiting item has waited (0 when nothing waits)."""
        if not self.oldest:
            return 0.0
        return (time.monotonic() if now is None else now) - self.oldest


class BatchMeter:
    """A batch's latency (a commit, a bus flush) against its own recent minimum.

    :meth:`record` costs two comparisons; :meth:`take` gives the largest latency since
    the last call and the minimum of the last ``keep`` windows (a sliding floor: a
    database that became slower for good becomes the new normal after ``keep`` windows).
    """

    __slots__ = ("__weakref__", "_floors", "_max", "_min", "keep", "name", "records")

    def __init__(self, name: str, keep: int = 300) -> None:
        self.name = name
        self.keep = keep
        self._max = 0.0
        self._min = math.inf
        self._floors: list[float] = []
        self.records = 0
        _meters[f"latency:{name}"] = self

    def record(self, latency_s: float) -> None:
        if latency_s > self._max:
            self._max = latency_s
        if latency_s < self._min:
            self._min = latency_s
        self.records += 1

    def take(self) -> tuple[float, float] | None:
        """``(largest latency since the last call, recent minimum)``, or None when no batch
        ran meanwhile."""
        if self._min == math.inf:
            return None
        self._floors.append(self._min)
        if len(self._floors) > self.keep:
            del self._floors[0]
        largest, self._max, self._min = self._max, 0.0, math.inf
        return largest, min(self._floors)

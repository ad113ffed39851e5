"""The sensors of one worker: each :meth:`Sensors.sample` reads them all (docs/degradation.md).

Cheap by construction: a sample is a few clock reads, the meters' minima
(:mod:`kefu.core.pressure`), one ``/proc/self/statm`` read every fifth sample and a
``/proc/self/fd`` listing every twentieth; the outbox sample walks at most
``outbox_sample`` connections every fifth. ``tests/test_degradation_sensors.py``
drives each one with an injected condition; the bench reports their CPU.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from collections import deque
from typing import Any

from kefu.core.pressure import BatchMeter, SojournMeter, Tally, meters

#: Readings whose value is compared with ``[degradation.thresholds]`` under these names.
SENSORS = (
    "loop_lag_ms",
    "loop_busy",
    "sojourn_ms",
    "store_ms",
    "batch_ratio",
    "slow_consumers",
    "cpu",
    "rss",
    "fds",
    "gc_ms_per_s",
    "handshakes_per_s",
    "sessions_per_s",
    "plugin",
    "inflow_per_s",
    "run_queue_ms",
    "commit_ms",
    "frames_inflight",
)
#: Readings shown (status page, metrics) but compared with no threshold: what the
#: hysteresis gate and an operator look at.
SHOWN_ONLY = ("inflow_per_s", "run_queue_ms", "commit_ms", "frames_inflight")

#: A batch slower than this never counts as slow, whatever its floor (a 0.2 ms commit
#: taking 2 ms is no pressure).
BATCH_FLOOR_S = 0.005
#: Samples over which ``loop_busy`` is measured (half a second at 100 ms).
BUSY_WINDOW = 5
#: Samples whose median is the ``batch_ratio`` reading: one slow commit (a neighbour's
#: fsync on a shared disk) is not a slow database; batches slow for half a second are.
BATCH_WINDOW = 5
#: Seconds a meter's last ratio stands without a new batch.
BATCH_STALE_S = 1.0
#: Samples over which ``store_ms`` is the *minimum* (half a second at 100 ms): a burst
#: shorter than that lets some message through fast and reads low; an overload that
#: stands half a second reads its delay (then the entry samples: under 1 s in all).
STORE_WINDOW = 5


def memory_total_bytes() -> int:
    """The machine's memory, or the cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


class GcClock:
    """Time spent in garbage collection, from ``gc.callbacks`` (start/stop pairs): the
    collecting thread's CPU time (``time.thread_time``), not the wall time, which on a
    machine other processes hold counts the collector's waits for a core too (in the
    overload bench at load 10 a wall-clock reading of 551 ms/s entered level 2 at 50 msg/s)."""

    __slots__ = ("_started", "last_pause_s", "longest_s", "total_s")

    def __init__(self) -> None:
        self.total_s = 0.0
        self.longest_s = 0.0
        self.last_pause_s = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.thread_time()
        elif self._started:
            pause = time.thread_time() - self._started
            self._started = 0.0
            self.total_s += pause
            self.last_pause_s = pause
            if pause > self.longest_s:
                self.longest_s = pause

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class RunQueueClock:
    """Seconds the calling thread has waited for a CPU while runnable (Linux schedstat),
    and (:attr:`on_cpu`) the seconds it has run.

    The file stays open and is re-read with ``pread`` (about 2 µs); ``None`` where the
    kernel does not keep the figure (the lag is then taken whole).
    """

    __slots__ = ("_fd", "available", "on_cpu")

    def __init__(self) -> None:
        self._fd: int | None = None
        self.available = True
        self.on_cpu: float | None = None  # at the last read

    def read(self) -> float | None:
        if not self.available:
            return None
        try:
            if self._fd is None:  # opened by the thread that samples: it is that thread's
                self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            fields = os.pread(self._fd, 128, 0).split()
            self.on_cpu = int(fields[0]) / 1e9
            return int(fields[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self.available = False
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Rate:
    """Events per second over the last ``window`` samples (a ring of counts)."""

    __slots__ = ("_ring", "_seen", "count")

    def __init__(self, window: int) -> None:
        self.count = 0  # incremented where the event happens
        self._seen = 0
        self._ring: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def sample(self, now: float) -> float:
        self._ring.append((now, self.count))
        first_t, first_n = self._ring[0]
        span = now - first_t
        return (self.count - first_n) / span if span > 0 else 0.0


class Sensors:
    """Every sensor of one worker; :meth:`sample` returns ``{sensor: reading}``."""

    def __init__(self, kernel: Any, settings: Any) -> None:
        self.kernel = kernel
        self.settings = settings
        self.gc = GcClock()
        self.handshakes = Rate(10)
        self.sessions = Rate(10)
        self._ticks = 0
        self._lags: deque[float] = deque(maxlen=settings.lag_window)
        self.run_queue = RunQueueClock()
        self._waited: float | None = None  # the loop thread's run-queue time at the last sample
        self.run_queue_s = 0.0  # ... and how much it grew over the last interval
        #: (monotonic, loop thread's CPU, its run-queue wait) of the last BUSY_WINDOW samples
        self._busy: deque[tuple[float, float, float]] = deque(maxlen=BUSY_WINDOW + 1)
        self._inflow: deque[tuple[float, int]] = deque(maxlen=11)
        self._gc: deque[tuple[float, float]] = deque(maxlen=11)
        self._cpu: tuple[float, float] | None = None
        self._cpu_value = 0.0
        self._rss, self._fds, self._slow = 0.0, 0.0, 0.0
        self._ratios: dict[str, tuple[float, float]] = {}  # meter -> (ratio, when)
        #: queue name -> the largest commit time of its last interval with a batch, s
        self._service: dict[str, float] = {}
        self.commit_s = 0.0  # the largest of those this interval (shown)
        self._batch: deque[float] = deque(maxlen=BATCH_WINDOW)
        #: queue name -> its delays (take_delay) of the last STORE_WINDOW samples
        self._delays: dict[str, deque[float]] = {}
        self.backlog = 0  # frames queued in the sampled outboxes
        self.extra: dict[str, float] = {}  # readings other plugins reported
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] or 1024
        workers = max(1, kernel.config.server.workers)
        budget_mb = settings.rss_budget_mb
        self.rss_budget = (
            budget_mb * 1024 * 1024 if budget_mb else memory_total_bytes() * 0.8 / workers
        )
        self.cost_s = 0.0  # CPU seconds spent sampling (the sensor's own price)

    def start(self) -> None:
        self.gc.install()

    def stop(self) -> None:
        self.gc.remove()
        self.run_queue.close()

    def sample(self, lag_s: float, plugin: float = 0.0) -> dict[str, float]:
        """One reading of every sensor; ``lag_s`` is how late the sampler woke up."""
        began = time.thread_time()
        now = time.monotonic()
        self._ticks += 1
        ratio = self._batch_ratio(now)  # first: it keeps each queue's commit time
        readings = {
            "loop_lag_ms": self._own_lag(lag_s) * 1000.0,
            "loop_busy": self._loop_busy(now),
            "sojourn_ms": self._sojourn(now) * 1000.0,
            "store_ms": self._store_delay(now) * 1000.0,
            "batch_ratio": ratio,
            "cpu": self._cpu_cores(now),
            "gc_ms_per_s": self._gc_rate(now),
            "handshakes_per_s": self.handshakes.sample(now),
            "sessions_per_s": self.sessions.sample(now),
            "plugin": plugin,
            "inflow_per_s": self._inflow_rate(now),
            "run_queue_ms": self.run_queue_s * 1000.0,
            "commit_ms": self.commit_s * 1000.0,
            "frames_inflight": float(self._frames_inflight()),
        }
        if self._ticks % 5 == 1:
            self._rss = self._read_rss() / self.rss_budget
            self._slow = self._outboxes()
        if self._ticks % 20 == 1:
            self._fds = self._count_fds() / self._fd_limit
        readings["rss"] = self._rss
        readings["fds"] = self._fds
        readings["slow_consumers"] = self._slow
        self.cost_s += time.thread_time() - began
        return readings

    # -- each sensor ----------------------------------------------------------------
    def _own_lag(self, lag_s: float) -> float:
        """The median over ``lag_window`` samples of the lag this process caused itself.

        The sampler wakes late either because this loop was busy (callbacks running,
        a blocking call: its own overload) or because its thread, runnable, waited
        for a core that other processes held (the machine's). The kernel counts the
        second for each thread (``/proc/thread-self/schedstat``): the time the loop
        thread spent in the run queue since the last sample is taken off the lag. An
        idle worker on a machine at load 18 then reads about nothing however late it
        woke; a busy loop on a quiet machine reads its whole lag. (Busy on a busy
        machine, it reads less than its lag: the queue sensors still see it.)
        """
        waited = self.run_queue.read()
        if waited is not None and self._waited is not None:
            self.run_queue_s = waited - self._waited
            lag_s = max(0.0, lag_s - self.run_queue_s)
        self._waited = waited
        self._lags.append(lag_s)
        ordered = sorted(self._lags)
        return ordered[len(ordered) // 2]

    def _loop_busy(self, now: float) -> float:
        """Share of the time the loop thread *could* run that it did run, over the last
        :data:`BUSY_WINDOW` samples: its CPU time over the wall time less its run-queue
        wait (both from schedstat, read by :meth:`_own_lag` just before). An idle loop
        sleeps in epoll and reads near 0 however busy the machine; a saturated one reads
        about 1 even when other processes hold the cores half the time, where the loop
        lag, its run-queue wait taken off, reads little. 0 without schedstat.
        """
        on_cpu = getattr(self.run_queue, "on_cpu", None)
        if on_cpu is None or self._waited is None:
            return 0.0
        self._busy.append((now, on_cpu, self._waited))
        first_t, first_cpu, first_wait = self._busy[0]
        could = (now - first_t) - (self._waited - first_wait)
        if could <= 0.001:
            return 0.0
        return min(1.0, max(0.0, (on_cpu - first_cpu) / could))

    def _inflow_rate(self, now: float) -> float:
        """Frames received per second over about a second (every :class:`Tally`)."""
        total = sum(m.count for m in meters().values() if isinstance(m, Tally))
        self._inflow.append((now, total))
        first_t, first_n = self._inflow[0]
        span = now - first_t
        return (total - first_n) / span if span > 0 else 0.0

    def _sojourn(self, now: float) -> float:
        """The worst standing queue: a queue's minimum sojourn this interval (or how long
        its oldest item has waited when nothing left it: a stuck commit records nothing),
        less its own service time, the largest commit of the interval.

        A group commit's items arriving while a commit runs wait for it to end: that wait
        is the commit's time, service, not a queue (with commits slowed to 100 ms by a
        starved writer thread every batch waits ~100 ms and the queue keeps up: in the
        overload bench at load 9 that read 80-110 ms at 50 msg/s and held level 2). What
        waits longer than the commit in flight is a queue that stands: batches capped at
        ``max_batch``, a writer waiting for the loop, a commit that does not return. The
        slow commit itself is ``batch_ratio``'s. The loop thread's run-queue wait of the
        interval (the machine's, as for the loop lag) is taken off too: the writer resumes
        on that thread."""
        worst = 0.0
        machine = self.run_queue_s
        for name, meter in meters().items():
            if isinstance(meter, SojournMeter):
                value = meter.take()
                waiting = meter.waiting_s(now) if value is None else max(value, 0.0)
                service = self._service.get(name.partition(":")[2], 0.0)
                worst = max(worst, waiting - service - machine)
        return worst

    def _store_delay(self, now: float) -> float:
        """The worst queue's standing delay: per sample the delay no item escaped (the
        smallest whole time in the store of a batch's newest item,
        :meth:`~kefu.core.pressure.SojournMeter.take_delay`), the minimum over the last
        :data:`STORE_WINDOW` samples. Wait *and* commit: under group commit a message
        overload shows as larger batches and longer commits (each batch holds what
        arrived during the one before), which ``sojourn_ms`` takes off as service."""
        worst = 0.0
        delays = self._delays
        for name, meter in meters().items():
            if isinstance(meter, SojournMeter):
                ring = delays.get(name)
                if ring is None:
                    ring = delays[name] = deque(maxlen=STORE_WINDOW)
                ring.append(meter.take_delay(now))
                worst = max(worst, min(ring))
        return worst

    def _frames_inflight(self) -> int:
        """Frames whose handler runs now (the gateway's pipeline depth; shown only)."""
        stats = getattr(getattr(self.kernel, "gateway", None), "stats", None)
        return int(getattr(stats, "inflight", 0) or 0)

    def _batch_ratio(self, now: float) -> float:
        """The worst meter's latest batch against its floor, the median over the last
        :data:`BATCH_WINDOW` samples; a meter with no batch this interval keeps its last
        ratio (a 120 ms commit spans several samples) for :data:`BATCH_STALE_S` at most
        (an idle store has no slow batches: before, the last ratio of a busy minute held
        level 1 for good once the traffic stopped)."""
        worst = 0.0
        last = self._ratios
        self.commit_s = 0.0
        for name, meter in meters().items():
            if isinstance(meter, BatchMeter):
                taken = meter.take()
                if taken is not None:
                    largest, floor = taken
                    self._service[name.partition(":")[2]] = largest
                    self.commit_s = max(self.commit_s, largest)
                    slow = largest > BATCH_FLOOR_S
                    ratio = largest / max(floor, BATCH_FLOOR_S / 10) if slow else 0.0
                    last[name] = (ratio, now)
                ratio, at = last.get(name, (0.0, now))
                if now - at > BATCH_STALE_S:
                    ratio = 0.0
                    del last[name]
                worst = max(worst, ratio)
        self._batch.append(worst)
        ordered = sorted(self._batch)
        return ordered[len(ordered) // 2]

    def _cpu_cores(self, now: float) -> float:
        cpu = time.process_time()
        if self._cpu is not None and now - self._cpu[0] >= 0.5:  # a half-second window
            self._cpu_value = (cpu - self._cpu[1]) / (now - self._cpu[0])
            self._cpu = (now, cpu)
        elif self._cpu is None:
            self._cpu = (now, cpu)
        return self._cpu_value

    def _gc_rate(self, now: float) -> float:
        self._gc.append((now, self.gc.total_s))
        first_t, first_total = self._gc[0]
        span = now - first_t
        return (self.gc.total_s - first_total) * 1000.0 / span if span > 0 else 0.0

    def _read_rss(self) -> float:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0

    def _count_fds(self) -> int:
        try:
            return len(os.listdir("/proc/self/fd"))
        except OSError:
            return 0

    def _outboxes(self) -> float:
        delivery = self.kernel.delivery
        if delivery is None:
            self.backlog = 0
            return 0.0
        seen = slow = backlog = 0
        limit, cap = self.settings.slow_outbox_frames, self.settings.outbox_sample
        for conn in delivery.connections():
            queued = conn.queued
            backlog += queued
            if queued >= limit:
                slow += 1
            seen += 1
            if seen >= cap:
                break
        self.backlog = backlog
        return slow / seen if seen else 0.0

"""The degradation controller of one worker: samples, decides the level, sheds, restores.

It is the :class:`kefu.core.pressure.Pressure` the kernel exposes while the plugin runs
(``kernel.pressure``): hot paths read its ``level`` attribute. Level changes call each
feature's ``set_enabled`` (shed in priority order, restored in reverse), emit the
``degradation.level_changed`` event and call ``kefu_degradation_level_changed``.

An operator's override (``kefu degrade --level 2``, the admin status page) holds a level
for a while in every worker: it is an install-level storage record that every worker
reads every ``override_poll_s`` seconds, and it expires by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from typing import Any

from kefu.core.pressure import MAX_LEVEL
from kefu.core.storage import INSTALL
from kefu.core.types import DegradableFeature
from kefu.plugins.degradation.levels import Baseline, Hysteresis
from kefu.plugins.degradation.sensors import SENSORS, Sensors

log = logging.getLogger(__name__)

#: The record holding an operator's override (install level).
OVERRIDE_KIND, OVERRIDE_ID = "degradation", "override"

#: What no level ever sheds: a feature declared under one of these names is refused
#: (docs/degradation.md "Never shed"). The gateway's store-and-deliver path has no
#: switch at all; these names keep a plugin from pretending otherwise.
NEVER_SHED = frozenset({"persistence", "acks", "delivery", "messages", "resume"})


#: Level changes kept for the status (``history``): the bench reads when each happened.
HISTORY = 64

#: Seconds after start-up during which readings are shown but choose no level.
WARM_UP_S = 1.0


class Controller:
    """Sensors + hysteresis + features + override of one worker."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.settings = kernel.config.section("degradation")
        self.sensors = Sensors(kernel, self.settings)
        self.hysteresis = self._hysteresis()
        self.level = 0  # what hot paths read: the override's level while one holds
        self.readings: dict[str, float] = dict.fromkeys(SENSORS, 0.0)
        self.features: list[DegradableFeature] = []
        self.shed: list[str] = []  # names of the features shed now, in shedding order
        self.override_level: int | None = None
        self.override_until = 0.0  # wall clock
        self.override_by: str | None = None
        self.changes = 0
        self.changed_at = time.time()
        #: the last level changes: {at (wall clock), old, new, reason} (the status shows them)
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.shed_total: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        #: refusals of level 2's admission limits, per path (``ws``, ``session``)
        self.rate_limited: Counter[str] = Counter()
        #: the admission limits' token buckets (path -> TokenBucket; the middleware's)
        self.buckets: dict[str, Any] = {}
        self.closed_slow = 0
        self.time_at = [0.0] * (MAX_LEVEL + 1)
        self._task: asyncio.Task | None = None
        self._last_override_poll = 0.0
        self._last_close = 0.0
        self._warm_until: float | None = None
        #: sensor -> its baseline (relative thresholds; settings.baseline_sensors)
        self.baselines: dict[str, Baseline] = {}

    def _hysteresis(self) -> Hysteresis:
        s = self.settings
        return Hysteresis(
            s.enter_samples,
            s.leave_s,
            s.min_dwell_s,
            s.exit_ratio,
            max_level=s.max_level,
            leave_inflow_ratio=s.leave_inflow_ratio,
            probe_s=s.probe_s,
            probe_max_s=s.probe_max_s,
            flap_window_s=s.flap_window_s,
            flap_dwell_s=s.flap_dwell_s,
        )

    # -- life cycle ------------------------------------------------------------------
    def collect_features(self) -> None:
        features = []
        for feature in self.kernel.hooks.degradation_features():
            if feature.name in NEVER_SHED:
                log.error("degradation: %r is never shed; the declaration is ignored", feature.name)
                continue
            features.append(feature)
        self.features = features

    def feature_level(self, feature: DegradableFeature) -> int:
        return self.settings.features.get(feature.name, feature.level)

    def start(self) -> None:
        self.collect_features()
        self.sensors.start()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self.sensors.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._apply(0, "shutdown")

    def reconfigure(self) -> None:
        """``[degradation]`` changed: new thresholds and feature levels from the next sample."""
        self.settings = self.kernel.config.section("degradation")
        self.sensors.settings = self.settings
        old, new = self.hysteresis, self._hysteresis()
        new.level, new.since = min(old.level, self.settings.max_level), old.since
        new.carry_state(old)
        self.hysteresis = new

    # -- the sampler -----------------------------------------------------------------
    async def _run(self) -> None:
        interval = self.settings.interval_s
        loop = asyncio.get_running_loop()
        expected = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            woke = loop.time()
            lag = max(0.0, woke - expected)
            interval = self.settings.interval_s
            expected = max(expected + interval, woke + interval / 2)
            try:
                await self.tick(lag, woke)
            except Exception:
                log.exception("degradation: a sample failed")

    async def tick(self, lag_s: float, now: float) -> None:
        """One sample: read the sensors, choose the level, act on it."""
        plugin = 0.0
        for reading in await self.kernel.hooks.degradation_pressure():
            self.sensors.extra[reading.source] = reading.value
            plugin = max(plugin, reading.value)
        self.readings = self.sensors.sample(lag_s, plugin)
        self.time_at[self.level] += self.settings.interval_s
        if self._warm_until is None:
            self._warm_until = now + WARM_UP_S
        self._learn(now)  # the warm-up teaches the baselines the machine's normal
        if now >= self._warm_until:  # start-up's own stalls (the GC freeze) are no load
            self.hysteresis.update(self.readings, self._thresholds(), now)
        await self._poll_override(now)
        wanted, reason = self.hysteresis.level, "sensors"
        if self.override_level is not None:
            if time.time() < self.override_until:
                wanted, reason = self.override_level, "override"
            else:
                self.override_level, self.override_by, reason = None, None, "override expired"
        if wanted != self.level:
            await self._apply(wanted, reason)
        if self.level >= 3:
            await self._close_slowest(now)

    def _learn(self, now: float) -> None:
        """Feed the baselines of the relative sensors (levels.Baseline)."""
        s = self.settings
        configured = s.thresholds.model_dump()
        for name in s.baseline_sensors if s.baseline_s > 0 else ():
            if name not in self.readings or name not in configured:
                continue
            base = self.baselines.get(name)
            if base is None:
                base = self.baselines[name] = Baseline(s.baseline_s, s.baseline_factor, 1.0)
            base.tau_s, base.factor, base.max_scale = (
                s.baseline_s,
                s.baseline_factor,
                s.baseline_max_scale,
            )
            base.feed(self.readings[name], configured[name][0], now)

    def _thresholds(self) -> dict[str, tuple[float, ...]]:
        """The entry thresholds in force: the configured ones, the relative sensors' scaled
        to their baseline."""
        thresholds = self.settings.thresholds.model_dump()
        if self.settings.baseline_s > 0:
            for name in self.settings.baseline_sensors:
                base = self.baselines.get(name)
                if base is not None and name in thresholds:
                    thresholds[name] = base.scaled(thresholds[name])
        return thresholds

    # -- acting on a level -----------------------------------------------------------
    async def _apply(self, new: int, reason: str) -> None:
        old = self.level
        if new == old:
            return
        self.level = new
        self.changes += 1
        self.changed_at = time.time()
        self.history.append({"at": self.changed_at, "old": old, "new": new, "reason": reason})
        if new < 2 <= old:  # a later limited period starts with full buckets
            for bucket in self.buckets.values():
                bucket.refill()
        for feature in self.features:  # shed in priority order
            level = self.feature_level(feature)
            if level and level <= new and feature.name not in self.shed:
                self._switch(feature, False)
                self.shed.append(feature.name)
                self.shed_total[feature.name] += 1
        for feature in reversed(self.features):  # restored in reverse
            level = self.feature_level(feature)
            if feature.name in self.shed and not (level and level <= new):
                self._switch(feature, True)
                self.shed.remove(feature.name)
        cause = {k: round(v, 3) for k, v in self.hysteresis.cause.items()}
        log.warning(
            "degradation: level %d -> %d (%s%s); shed: %s",
            old,
            new,
            reason,
            f": {cause}" if reason == "sensors" and cause else "",
            ", ".join(self.shed) or "nothing",
        )
        await self.kernel.emit(
            "degradation.level_changed",
            None,
            old=old,
            new=new,
            reason=reason,
            cause=cause if reason == "sensors" else {},
            shed=list(self.shed),
            worker=self.kernel.worker_name,
        )
        await self.kernel.hooks.degradation_level_changed(old, new)

    def _switch(self, feature: DegradableFeature, enabled: bool) -> None:
        try:
            feature.set_enabled(enabled)
        except Exception:
            log.exception("degradation: %s.set_enabled(%s) failed", feature.name, enabled)

    async def _close_slowest(self, now: float) -> None:
        """At level 3, once a second: close the connections with the fullest outboxes
        (they reconnect and resume from their last seq: nothing acknowledged is lost)."""
        if now - self._last_close < 1.0:
            return
        self._last_close = now
        delivery, gateway = self.kernel.delivery, self.kernel.gateway
        share, most = self.settings.close_slowest_share, self.settings.close_slowest_max
        if delivery is None or gateway is None or not share or not most:
            return
        conns = list(delivery.connections())
        floor = self.settings.slow_outbox_frames
        slow = [c for c in conns if not c.closed and c.queued >= floor]
        count = min(most, max(1, int(len(conns) * share)), len(slow))
        slow.sort(key=lambda c: c.queued, reverse=True)
        for conn in slow[:count]:
            await gateway.close(conn, "overloaded")
            self.closed_slow += 1

    # -- the operator's override -----------------------------------------------------
    async def override(self, level: int | None, ttl_s: float, by: str | None = None) -> None:
        """Hold ``level`` in every worker for ``ttl_s`` seconds; None ends an override."""
        if level is not None and not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"level must be 0..{MAX_LEVEL}")
        ttl_s = min(max(ttl_s, 1.0), self.settings.override_max_s)
        until = time.time() + ttl_s if level is not None else 0.0
        storage = self.kernel.storage
        if storage is not None:
            data = {"level": level, "until": until, "by": by}
            await storage.put_record(INSTALL, OVERRIDE_KIND, OVERRIDE_ID, data)
        await self._take_override(level, until, by)

    async def _take_override(self, level: int | None, until: float, by: str | None) -> None:
        if level is not None and until <= time.time():
            level = None
        changed = (level, until) != (self.override_level, self.override_until)
        self.override_level, self.override_until, self.override_by = level, until, by
        if not changed:
            return
        if level is not None:
            await self._apply(level, "override")
        else:
            await self._apply(self.hysteresis.level, "override ended")

    async def _poll_override(self, now: float) -> None:
        if now - self._last_override_poll < self.settings.override_poll_s:
            return
        self._last_override_poll = now
        storage = self.kernel.storage
        if storage is None:
            return
        try:
            record = await storage.get_record(INSTALL, OVERRIDE_KIND, OVERRIDE_ID)
        except Exception as exc:  # storage under pressure: keep the override we know
            log.debug("degradation: the override could not be read: %s", exc)
            return
        data = record.data if record is not None else {}
        level, until = data.get("level"), float(data.get("until") or 0.0)
        if (level, until) != (self.override_level, self.override_until):
            await self._take_override(level, until, data.get("by"))

    # -- what is shown ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        override = None
        if self.override_level is not None:
            override = {
                "level": self.override_level,
                "until": self.override_until,
                "remaining_s": round(max(0.0, self.override_until - time.time()), 1),
                "by": self.override_by,
            }
        thresholds = self._thresholds()
        return {
            "enabled": True,
            "level": self.level,
            "sensed_level": self.hysteresis.level,
            "since": self.changed_at,
            "changes": self.changes,
            "history": list(self.history),
            "sensors": {
                name: {"value": round(value, 4), "thresholds": list(thresholds.get(name, ()))}
                for name, value in self.readings.items()
            },
            "baselines": {name: round(b.value, 3) for name, b in self.baselines.items()},
            "plugin_readings": dict(self.sensors.extra),
            "outbox_backlog": self.sensors.backlog,
            "features": [
                {
                    "name": f.name,
                    "priority": f.priority,
                    "level": self.feature_level(f),
                    "shed": f.name in self.shed,
                    "description": f.description,
                }
                for f in self.features
            ],
            "shed": list(self.shed),
            "refused": dict(self.refused),
            "rate_limited": dict(self.rate_limited),
            "override": override,
            "worker": self.kernel.worker_name,
        }

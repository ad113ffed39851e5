"""Levels with hysteresis: enter fast, leave slowly, hold a minimum dwell (no flapping).

Pure logic on readings and a clock, so that tests drive it sample by sample:

- every sensor's reading maps to the highest level whose *entry* threshold it reaches
  and to the highest level whose *exit* threshold (``exit_ratio`` x entry) it reaches;
- the worker's wanted level is the highest entry level of any sensor; it is entered
  after ``enter_samples`` consecutive samples wanting a higher level (straight to the
  lowest level all of them wanted: a flood goes from 0 to 3 in two samples);
- a level is left one step at a time, once every sensor read below that level's exit
  thresholds for ``leave_s`` seconds and the level was held ``min_dwell_s``;
- the band between exit and entry thresholds is where a steady load sits without
  changing level;
- shedding works: under a steady overload the readings calm down *because* of what
  was shed, and leaving would bring the pressure straight back (a control loop that
  oscillates). So a level is also left only once the offered work fell: the inflow
  (``inflow_per_s``, frames received) at most ``leave_inflow_ratio`` times what it was
  when the level was entered, or after ``probe_s`` at the level (a probe: restore and
  see); a level re-entered within ``flap_window_s`` of leaving it doubles the next
  probe time (up to ``probe_max_s``), a calm re-entry resets it. A level entered on the
  offered rates alone (:data:`OFFERED`: handshakes and new sessions a second, counted
  before any refusal, so shedding does not calm them) is left on calm readings: those
  readings falling *is* the offered work falling.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Inflow readings (each a one-second rate) whose median is the inflow a level is entered
#: with, and the one compared with it to say whether the load fell (1 s at 100 ms).
INFLOW_SAMPLES = 10

#: Sensors that read the offered work itself (counted before any refusal): calm readings
#: of theirs mean the load fell, whatever the inflow of frames.
OFFERED = frozenset({"handshakes_per_s", "sessions_per_s"})


@dataclass
class Hysteresis:
    enter_samples: int
    leave_s: float
    min_dwell_s: float
    exit_ratio: float
    max_level: int = 3
    leave_inflow_ratio: float = 0.8
    probe_s: float = 90.0
    probe_max_s: float = 600.0
    flap_window_s: float = 30.0
    #: a level re-entered within flap_window_s is held at least this long, doubled at
    #: each further flap (up to probe_max_s)
    flap_dwell_s: float = 10.0
    level: int = 0
    since: float = 0.0  # when the current level was entered
    #: the sensors that put the worker at its level, with the reading (the event says them)
    cause: dict[str, float] = field(default_factory=dict)
    _above: int = 0
    _above_level: int = 0
    _calm_since: float | None = None
    #: per level, the inflow when it was entered; when it was last left
    _entry_inflow: dict[int, float] = field(default_factory=dict)
    _entry_cause: dict[int, frozenset[str]] = field(default_factory=dict)
    _left_at: dict[int, float] = field(default_factory=dict)
    _probe: float | None = None  # the probe time in force (probe_s, doubled by flaps)
    _dwell: float | None = None  # the dwell in force (min_dwell_s; flap_dwell_s doubled)
    #: the inflow readings of the last INFLOW_SAMPLES samples (the gate's smoothing)
    _inflows: deque[float] = field(default_factory=lambda: deque(maxlen=INFLOW_SAMPLES))

    def levels_of(
        self, readings: Mapping[str, float], thresholds: Mapping[str, tuple[float, ...]]
    ) -> tuple[int, int, dict[str, float]]:
        """``(entry level, exit level, {sensor: reading} of the sensors at the entry level)``."""
        enter = stay = 0
        cause: dict[str, float] = {}
        for sensor, value in readings.items():
            bounds = thresholds.get(sensor)
            if not bounds:
                continue
            entry_level = sum(1 for bound in bounds if value >= bound)
            stay_level = sum(1 for bound in bounds if value >= bound * self.exit_ratio)
            if entry_level > enter:
                enter, cause = entry_level, {sensor: value}
            elif entry_level == enter and entry_level:
                cause[sensor] = value
            stay = max(stay, stay_level)
        return min(enter, self.max_level), min(stay, self.max_level), cause

    def update(
        self,
        readings: Mapping[str, float],
        thresholds: Mapping[str, tuple[float, ...]],
        now: float,
    ) -> int | None:
        """Feed one sample; the new level when it changed, else None."""
        enter, stay, cause = self.levels_of(readings, thresholds)
        self._inflows.append(readings.get("inflow_per_s", 0.0))
        if enter > self.level:
            # the level every sample of the run wanted at least
            self._above_level = enter if self._above == 0 else min(self._above_level, enter)
            self._above += 1
            self._calm_since = None
            if self._above >= self.enter_samples:
                # a step up of the load: the run's own readings, not the second before it
                run = list(self._inflows)[-self._above :]
                entered_with = max(self._inflow(), min(run))
                return self._enter(self._above_level, now, cause, entered_with)
            return None
        self._above = 0
        if stay >= self.level or self.level == 0:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since < self.leave_s or now - self.since < self.dwell:
            return None
        if not self._load_fell(self._inflow(), now):
            return None
        self._calm_since = now  # the next step down waits again
        self._left_at[self.level] = now
        return self._set(self.level - 1, now, cause)

    def carry_state(self, old: Hysteresis) -> None:
        """Keep ``old``'s memory of entries, exits and probes (a live reconfiguration)."""
        self._entry_inflow, self._entry_cause, self._left_at = (
            old._entry_inflow,
            old._entry_cause,
            old._left_at,
        )
        self._probe, self._dwell, self._inflows = old._probe, old._dwell, old._inflows

    def _inflow(self) -> float:
        """The median of the last :data:`INFLOW_SAMPLES` inflow readings (a one-second rate
        of a few dozen frames wanders by 20 %: one low reading is no fall of the load)."""
        recent = sorted(self._inflows)
        return recent[len(recent) // 2] if recent else 0.0

    @property
    def dwell(self) -> float:
        """Seconds a level is held at least: ``min_dwell_s``, longer after flaps."""
        return self.min_dwell_s if self._dwell is None else max(self.min_dwell_s, self._dwell)

    @property
    def probe(self) -> float:
        """Seconds at a level after which it is left on calm readings alone."""
        return self.probe_s if self._probe is None else self._probe

    def _load_fell(self, inflow: float, now: float) -> bool:
        """Calm because the work offered fell, or time for a probe (module docstring)."""
        entered_with = self._entry_inflow.get(self.level, 0.0)
        if inflow <= entered_with * self.leave_inflow_ratio or entered_with <= 0.0:
            return True
        cause = self._entry_cause.get(self.level)
        if cause and cause <= OFFERED:  # a flood of newcomers: its own readings fell
            return True
        return now - self.since >= self.probe

    def _enter(self, level: int, now: float, cause: dict[str, float], inflow: float) -> int:
        left = self._left_at.get(level)
        flapped = left is not None and now - left < self.flap_window_s
        self._probe = min(self.probe * 2, self.probe_max_s) if flapped else None
        if flapped:
            dwell = self.flap_dwell_s if self._dwell is None else self._dwell * 2
            self._dwell = min(dwell, self.probe_max_s)
        else:
            self._dwell = None
        for entered in range(self.level + 1, level + 1):
            self._entry_inflow[entered] = inflow
            self._entry_cause[entered] = frozenset(cause)
        return self._set(level, now, cause)

    def _set(self, level: int, now: float, cause: dict[str, float]) -> int:
        self.level, self.since, self.cause = level, now, cause
        self._above = 0
        return level


#: A young baseline's time constant, and how long it is young (the controller's 1 s warm-up
#: and as much again).
START_TAU_S = 0.5
YOUNG_S = 2.0


@dataclass
class Baseline:
    """A sensor's own normal, and the thresholds scaled to it (relative thresholds).

    A time sensor (loop lag, queue sojourn) of a worker on a starved machine reads tens of
    milliseconds with no load at all; absolute thresholds then hold a level for good and
    detect nothing more (issue 16's bench: level 2 held from P). The baseline is an
    exponential average of the reading with time constant ``tau_s`` (``START_TAU_S`` for the
    first ``YOUNG_S``: the warm-up teaches it the machine), each reading clipped
    at the current level-1 threshold (a spike moves it little; a standing overload moves
    it by at most that much per ``tau_s``); every entry threshold is scaled by
    ``max(1, factor * baseline / level-1 threshold)``, at most ``max_scale``: level 1 is
    entered at ``factor`` times the worker's own normal, never below the configured
    thresholds, never above ``max_scale`` times them. A step up of the load (twice the
    rate) is seen within the entry samples as before; a load that creeps up slower than
    ``tau_s`` becomes the normal up to the cap (the price, documented).
    """

    tau_s: float
    factor: float
    max_scale: float
    value: float = 0.0  # starts at 0: the configured thresholds until learnt
    at: float | None = None
    born: float | None = None

    def scale(self, first: float) -> float:
        if first <= 0 or self.value <= 0:
            return 1.0
        return min(self.max_scale, max(1.0, self.factor * self.value / first))

    def feed(self, reading: float, first: float, now: float) -> None:
        """One reading; ``first`` is the configured level-1 threshold."""
        if self.at is None:
            self.at = self.born = now
            return
        dt, self.at = now - self.at, now
        if dt <= 0 or self.tau_s <= 0:
            return
        ceiling = first * self.scale(first)
        # young (the start-up's warm-up), it learns fast: the machine's normal is known
        # before any level is chosen; then over tau_s only (a tau growing with age let a
        # load that came a few seconds after start-up become the normal within a second)
        age = now - self.born if self.born is not None else 0.0
        tau = min(self.tau_s, START_TAU_S) if age < YOUNG_S else self.tau_s
        weight = 1.0 - math.exp(-dt / tau)
        self.value += weight * (min(reading, ceiling) - self.value)

    def scaled(self, bounds: tuple[float, ...]) -> tuple[float, ...]:
        k = self.scale(bounds[0]) if bounds else 1.0
        return tuple(b * k for b in bounds) if k != 1.0 else tuple(bounds)

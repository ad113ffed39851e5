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
  changing level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Hysteresis:
    enter_samples: int
    leave_s: float
    min_dwell_s: float
    exit_ratio: float
    max_level: int = 3
    level: int = 0
    since: float = 0.0  # when the current level was entered
    #: the sensors that put the worker at its level, with the reading (the event says them)
    cause: dict[str, float] = field(default_factory=dict)
    _above: int = 0
    _above_level: int = 0
    _calm_since: float | None = None

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
        if enter > self.level:
            # the level every sample of the run wanted at least
            self._above_level = enter if self._above == 0 else min(self._above_level, enter)
            self._above += 1
            self._calm_since = None
            if self._above >= self.enter_samples:
                return self._set(self._above_level, now, cause)
            return None
        self._above = 0
        if stay >= self.level or self.level == 0:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since >= self.leave_s and now - self.since >= self.min_dwell_s:
            self._calm_since = now  # the next step down waits again
            return self._set(self.level - 1, now, cause)
        return None

    def _set(self, level: int, now: float, cause: dict[str, float]) -> int:
        self.level, self.since, self.cause = level, now, cause
        self._above = 0
        return level

"""Login throttling: failed attempts per (client address, site, e-mail) in a sliding window."""

from __future__ import annotations

import time
from collections import deque

MAX_KEYS = 100_000


class LoginThrottle:
    """Counts recent failures per key; a key at the limit is refused until one ages out."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[tuple[str, ...], deque[float]] = {}

    def retry_after(self, key: tuple[str, ...], now: float | None = None) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        recent = self._recent(key, now)
        if recent is None or len(recent) < self.max_failures:
            return 0.0
        return max(0.0, recent[0] + self.window - now)

    def failed(self, key: tuple[str, ...], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) >= MAX_KEYS:
            self._prune(now)
        self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: tuple[str, ...]) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: tuple[str, ...], now: float) -> deque[float] | None:
        recent = self._failures.get(key)
        if recent is None:
            return None
        while recent and recent[0] + self.window <= now:
            recent.popleft()
        if not recent:
            del self._failures[key]
            return None
        return recent

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        if len(self._failures) >= MAX_KEYS:  # still full: forget the oldest half
            for key in list(self._failures)[: MAX_KEYS // 2]:
                del self._failures[key]

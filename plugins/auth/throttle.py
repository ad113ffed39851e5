"""Login throttling in the bus's shared state, so the limits hold across worker processes.

Failed logins are counted in fixed windows of ``login_window`` seconds under three
keys, each with its own limit:

- (client address, site, e-mail): ``login_max_failures`` — someone mistyping;
- (site, e-mail): ``ACCOUNT_FACTOR`` times that — one account guessed from many
  addresses;
- (client address): ``ADDRESS_FACTOR`` times that — password spraying over many
  accounts from one address.

A key at its limit refuses every attempt (even a right password) until its window
ends. The counters live in :class:`kefu.core.bus.SharedState` (Redis with the
Redis bus), so every worker sees the same counts.
"""

from __future__ import annotations

from typing import Any

#: An account's failures from all addresses, as a multiple of the per-address limit.
ACCOUNT_FACTOR = 4
#: One address's failures over all accounts, as a multiple of the per-address limit.
ADDRESS_FACTOR = 20
PREFIX = "kefu:login:"


class LoginThrottle:
    """Counts failures per key in the shared state; a key at its limit is refused."""

    def __init__(self, state: Any, max_failures: int, window: float) -> None:
        self.state = state
        self.max_failures = max_failures
        self.window = window

    def _keys(self, address: str, site_id: str, email: str) -> list[tuple[str, int]]:
        n = self.max_failures
        return [
            (f"{PREFIX}ase:{address}\0{site_id}\0{email}", n),
            (f"{PREFIX}se:{site_id}\0{email}", n * ACCOUNT_FACTOR),
            (f"{PREFIX}a:{address}", n * ADDRESS_FACTOR),
        ]

    async def retry_after(self, address: str, site_id: str, email: str) -> float:
        """Seconds until this attempt may be evaluated; 0 when it may be now. The window's
        exact end is not kept, so the answer is the window (an upper bound)."""
        for key, limit in self._keys(address, site_id, email):
            count = await self.state.get(key)
            if count is not None and int(count) >= limit:
                return self.window
        return 0.0

    async def failed(self, address: str, site_id: str, email: str) -> None:
        for key, _ in self._keys(address, site_id, email):
            await self.state.incr(key, ttl=self.window)

    async def succeeded(self, address: str, site_id: str, email: str) -> None:
        """A right password clears the mistyping count, not the account's or address's."""
        await self.state.delete(self._keys(address, site_id, email)[0][0])

"""Login throttling in the bus's shared state, so the limits hold across worker processes.

Failed logins are counted in fixed windows of ``login_window`` seconds:

- (client address, site, e-mail): ``login_max_failures`` — someone mistyping, or one
  address guessing one account: refused until the window ends (only that address);
- (site, e-mail): past ``ACCOUNT_FACTOR`` times that — one account guessed from many
  addresses: **back-off**, not a lockout: one attempt on that account is evaluated per
  delay (1 s, doubling with each further failure, at most :data:`MAX_BACKOFF_S`), the
  others answer 429 with ``Retry-After``. Its owner still signs in after a short wait;
  a guesser gets one guess per delay whatever its number of addresses;
- (client address): past ``ADDRESS_FACTOR`` times that — password spraying over many
  accounts from one address: the same back-off for that address;
- the whole install: past ``[auth] login_global_failures``, every attempt waits
  ``login_global_delay_s`` before its password is checked.

The client address is the peer's, or with ``[auth] trusted_proxies`` the right-most
``X-Forwarded-For`` entry that is not a trusted proxy (:func:`client_address`); the
header from any other peer is ignored, so a client cannot pick its own address.
The scrypt work itself is bounded per process (:class:`PasswordChecks`). The counters
live in :class:`kefu.core.bus.SharedState` (Redis with the Redis bus).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

#: An account's failures from all addresses, as a multiple of the per-address limit.
ACCOUNT_FACTOR = 4
#: One address's failures over all accounts, as a multiple of the per-address limit.
ADDRESS_FACTOR = 20
#: Longest back-off between two evaluated attempts on one account or from one address.
MAX_BACKOFF_S = 30.0
PREFIX = "kefu:login:"
GLOBAL_KEY = f"{PREFIX}all"


def backoff(excess: int) -> float:
    """Seconds between evaluated attempts once ``excess`` failures passed the limit."""
    return min(MAX_BACKOFF_S, float(2 ** min(max(excess, 0), 16)))


class LoginThrottle:
    """Counts failures per key in the shared state and decides who is evaluated now."""

    def __init__(
        self, state: Any, max_failures: int, window: float, global_failures: int = 10**9
    ) -> None:
        self.state = state
        self.max_failures = max_failures
        self.window = window
        self.global_failures = global_failures

    def _keys(self, address: str, site_id: str, email: str) -> list[tuple[str, int]]:
        n = self.max_failures
        return [
            (f"{PREFIX}ase:{address}\0{site_id}\0{email}", n),
            (f"{PREFIX}se:{site_id}\0{email}", n * ACCOUNT_FACTOR),
            (f"{PREFIX}a:{address}", n * ADDRESS_FACTOR),
        ]

    async def _count(self, key: str) -> int:
        value = await self.state.get(key)
        return int(value) if value is not None else 0

    async def retry_after(self, address: str, site_id: str, email: str) -> float:
        """Seconds until this attempt may be evaluated; 0 when it may be now (and then it
        takes the account's and address's back-off slot, if they are past their limits)."""
        keys = self._keys(address, site_id, email)
        key, limit = keys[0]
        if await self._count(key) >= limit:
            return self.window  # the window's end is not kept: an upper bound
        for key, limit in keys[1:]:
            excess = await self._count(key) - limit
            if excess >= 0:
                delay = backoff(excess)
                if not await self.state.set(f"{key}:gate", b"1", ttl=delay, only_if_absent=True):
                    return delay
        return 0.0

    async def global_delay(self, delay: float) -> float:
        """``delay`` while the whole install is past its failure limit, else 0."""
        return delay if await self._count(GLOBAL_KEY) >= self.global_failures else 0.0

    async def failed(self, address: str, site_id: str, email: str) -> None:
        for key, _ in self._keys(address, site_id, email):
            await self.state.incr(key, ttl=self.window)
        await self.state.incr(GLOBAL_KEY, ttl=self.window)

    async def succeeded(self, address: str, site_id: str, email: str) -> None:
        """A right password clears the mistyping count, not the account's or address's."""
        await self.state.delete(self._keys(address, site_id, email)[0][0])


def _networks(proxies: list[str]) -> list[Any]:
    networks = []
    for text in proxies:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            continue
    return networks


def _trusted(address: str | None, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: Any, trusted_proxies: list[str]) -> str:
    """The client's address: the peer, or behind trusted proxies the right-most
    ``X-Forwarded-For`` hop that is not one of them. Never taken from an untrusted peer."""
    peer = request.remote or "?"
    networks = _networks(trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop[:64]
    return peer


class Busy(Exception):
    """Too many password checks waiting in this process."""


class PasswordChecks:
    """At most ``concurrency`` scrypt checks at once per process and ``queue_max`` waiting:
    a login flood costs bounded CPU and memory (each check holds 16 MiB)."""

    def __init__(self, concurrency: int, queue_max: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.limit = concurrency + queue_max
        self.pending = 0  # running and waiting

    async def run(self, check: Any, *args: Any) -> Any:
        if self.pending >= self.limit:
            raise Busy
        self.pending += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(check, *args)
        finally:
            self.pending -= 1

"""Live figures for the admin status page: connections, queue, messages per second."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kefu.core.domain import ASSIGNED, QUEUED

SCAN_LIMIT = 1000


class _Ring:
    """One site's messages per second over the last ``size`` seconds.

    ``counts[s % size]`` holds second ``s`` for ``s`` in ``(head - size, head]``; ``total``
    is their sum, kept as slots are filled and cleared, so that adding costs O(1) and time
    moving on costs one cleared slot per second passed (at most ``size``).
    """

    __slots__ = ("counts", "head", "total")

    def __init__(self, size: int, second: int) -> None:
        self.counts = [0] * size
        self.head = second
        self.total = 0

    def advance(self, second: int) -> None:
        """Move ``head`` to ``second``, clearing the slots of the seconds that left."""
        size = len(self.counts)
        if second - self.head >= size:
            self.counts = [0] * size
            self.total = 0
        else:
            counts = self.counts
            for passed in range(self.head + 1, second + 1):
                slot = passed % size
                self.total -= counts[slot]
                counts[slot] = 0
        self.head = second

    def add(self, second: int) -> None:
        if second > self.head:
            self.advance(second)
        elif second <= self.head - len(self.counts):
            return  # older than the ring keeps
        self.counts[second % len(self.counts)] += 1
        self.total += 1

    def count(self, first: int, last: int) -> int:
        """Messages in the seconds ``first <= s < last`` that the ring still holds."""
        size = len(self.counts)
        first = max(first, self.head - size + 1)
        last = min(last, self.head + 1)
        if last - first >= size:
            return self.total
        return sum(self.counts[s % size] for s in range(first, last))


class MessageRate:
    """Messages stored per site, in one-second buckets (fed by ``message.stored`` events).

    A ring of per-second counts per site with a running sum: a message costs O(1) however
    long the traffic has run; a reading costs at most one step per second of its window.
    """

    def __init__(self, keep_s: int = 300) -> None:
        self.keep_s = keep_s
        self._rings: dict[str, _Ring] = {}
        self.totals: Counter[str] = Counter()

    def add(self, site_id: str, ts: float | None = None) -> None:
        second = int(time.time() if ts is None else ts)
        ring = self._rings.get(site_id)
        if ring is None:
            # one slot more than kept: the current, incomplete second rides along
            ring = self._rings[site_id] = _Ring(self.keep_s + 1, second)
        ring.add(second)
        self.totals[site_id] += 1

    def per_second(self, site_id: str, window_s: int, now: float | None = None) -> float:
        """Average over the last ``window_s`` complete seconds (at most ``keep_s``)."""
        current = int(time.time() if now is None else now)
        ring = self._rings.get(site_id)
        if ring is None:
            return 0.0
        return ring.count(current - window_s, current) / window_s


async def site_status(kernel: Any, site_id: str, rate: MessageRate) -> dict[str, Any]:
    """What the status page shows for one site (connections are this process's)."""
    storage = kernel.storage
    queued = await storage.list_conversations(site_id, state=QUEUED, limit=SCAN_LIMIT)
    assigned = await storage.list_conversations(site_id, state=ASSIGNED, limit=SCAN_LIMIT)
    agents = await storage.list_agents(site_id)
    visitors = agents_connected = 0
    transports: Counter[str] = Counter()
    delivery = kernel.delivery
    connected_agents: set[str] = set()
    if delivery is not None:
        for conn in delivery.connections(site_id):
            principal = conn.principal
            transports[conn.transport] += 1
            if principal.kind == "visitor":
                visitors += 1
            else:
                agents_connected += 1
                connected_agents.add(principal.id)
    now = time.time()
    oldest = min((c.meta.get("queued_at", c.created_at) for c in queued), default=None)
    window = kernel.config.section("web").rate_window_s
    return {
        "site_id": site_id,
        "connections": {
            "visitors": visitors,
            "agents": agents_connected,
            "by_transport": dict(transports),
        },
        "queue": {
            "waiting": len(queued),
            "longest_wait_s": round(now - oldest, 1) if oldest is not None else 0,
        },
        "open_conversations": len(assigned),
        "agents": {
            "total": len(agents),
            "online": sum(1 for a in agents if a.status == "online"),
            "connected": len(connected_agents),
        },
        "messages": {
            "per_second": round(rate.per_second(site_id, window, now), 2),
            "window_s": window,
            "total_since_start": rate.totals[site_id],
        },
        "ts": now,
    }

"""Live figures for the admin status page: connections, queue, messages per second."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson

from kefu.core.bus import WorkerBoard
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


def local_connections(kernel: Any, site_id: str) -> dict[str, Any]:
    """This process's connections of one site."""
    visitors = agents = 0
    transports: Counter[str] = Counter()
    agent_ids: set[str] = set()
    delivery = kernel.delivery
    if delivery is not None:
        for conn in delivery.connections(site_id):
            transports[conn.transport] += 1
            if conn.principal.kind == "visitor":
                visitors += 1
            else:
                agents += 1
                agent_ids.add(conn.principal.id)
    return {
        "visitors": visitors,
        "agents": agents,
        "by_transport": dict(transports),
        "agent_ids": sorted(agent_ids),
    }


class WorkerFigures:
    """With a bus shared by several processes: each worker writes its per-site figures
    (connections, messages stored) into the shared state every ``interval`` seconds, so
    that the status page, whichever worker answers it, shows the whole install."""

    def __init__(self, kernel: Any, rate: MessageRate, interval: float = 5.0) -> None:
        self.kernel, self.rate = kernel, rate
        self.board = WorkerBoard(kernel, "status", self._figures, interval)

    def local(self, site_id: str, now: float) -> dict[str, Any]:
        window = self.kernel.config.section("web").rate_window_s
        return {
            **local_connections(self.kernel, site_id),
            "per_second": self.rate.per_second(site_id, window, now),
            "total": self.rate.totals[site_id],
        }

    def _figures(self) -> bytes:
        now, sites = time.time(), set(self.rate.totals)
        delivery = self.kernel.delivery
        if delivery is not None:
            sites |= {c.principal.site_id for c in delivery.connections()}
        return orjson.dumps({site: self.local(site, now) for site in sites})

    def start(self) -> None:
        self.board.start()

    async def stop(self) -> None:
        await self.board.stop()

    async def others(self, site_id: str) -> list[dict[str, Any]]:
        """The other live workers' latest figures of one site."""
        return [
            orjson.loads(raw).get(site_id) or {} for raw in (await self.board.others()).values()
        ]


async def site_status(
    kernel: Any, site_id: str, rate: MessageRate, figures: WorkerFigures | None = None
) -> dict[str, Any]:
    """What the status page shows for one site: with :class:`WorkerFigures`, the
    connections and message rates of every worker, else this process's."""
    storage = kernel.storage
    queued = await storage.list_conversations(site_id, state=QUEUED, limit=SCAN_LIMIT)
    assigned = await storage.list_conversations(site_id, state=ASSIGNED, limit=SCAN_LIMIT)
    agents = await storage.list_agents(site_id)
    now = time.time()
    window = kernel.config.section("web").rate_window_s
    own = {
        **local_connections(kernel, site_id),
        "per_second": rate.per_second(site_id, window, now),
        "total": rate.totals[site_id],
    }
    parts = [own] + (await figures.others(site_id) if figures is not None else [])
    transports: Counter[str] = Counter()
    for part in parts:
        transports.update(part.get("by_transport") or {})
    connected_agents = {a for part in parts for a in part.get("agent_ids") or ()}
    oldest = min((c.meta.get("queued_at", c.created_at) for c in queued), default=None)
    return {
        "site_id": site_id,
        "connections": {
            "visitors": sum(part.get("visitors", 0) for part in parts),
            "agents": sum(part.get("agents", 0) for part in parts),
            "by_transport": dict(transports),
            "workers": len(parts),
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
            "per_second": round(sum(part.get("per_second", 0.0) for part in parts), 2),
            "window_s": window,
            "total_since_start": sum(part.get("total", 0) for part in parts),
        },
        # this worker's degradation level and sensor readings (docs/degradation.md)
        "degradation": kernel.pressure.snapshot(),
        "ts": now,
    }

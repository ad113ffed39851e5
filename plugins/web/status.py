"""Live figures for the admin status page: connections, queue, messages per second."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kefu.core.domain import ASSIGNED, QUEUED

SCAN_LIMIT = 1000


class MessageRate:
    """Messages stored per site, in one-second buckets (fed by ``message.stored`` events)."""

    def __init__(self, keep_s: int = 300) -> None:
        self.keep_s = keep_s
        self._buckets: dict[str, dict[int, int]] = {}
        self.totals: Counter[str] = Counter()

    def add(self, site_id: str, ts: float | None = None) -> None:
        second = int(time.time() if ts is None else ts)
        buckets = self._buckets.setdefault(site_id, {})
        buckets[second] = buckets.get(second, 0) + 1
        self.totals[site_id] += 1
        if len(buckets) > self.keep_s:
            for old in [s for s in buckets if s < second - self.keep_s]:
                del buckets[old]

    def per_second(self, site_id: str, window_s: int, now: float | None = None) -> float:
        """Average over the last ``window_s`` complete seconds."""
        current = int(time.time() if now is None else now)
        buckets = self._buckets.get(site_id, {})
        count = sum(n for s, n in buckets.items() if current - window_s <= s < current)
        return count / window_s


async def site_status(kernel: Any, site_id: str, rate: MessageRate) -> dict[str, Any]:
    """What the status page shows for one site (connections are this process's)."""
    storage = kernel.storage
    queued = await storage.list_conversations(site_id, state=QUEUED, limit=SCAN_LIMIT)
    assigned = await storage.list_conversations(site_id, state=ASSIGNED, limit=SCAN_LIMIT)
    agents = await storage.list_agents(site_id)
    visitors = agents_connected = 0
    transports: Counter[str] = Counter()
    gateway = getattr(kernel, "gateway", None)
    connected_agents: set[str] = set()
    if gateway is not None:
        for conn in gateway.registry:
            principal = conn.principal
            if principal.site_id != site_id:
                continue
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

"""The series fed by domain events and the transport hooks, kept as plain numbers.

Recording is a dictionary increment (and, for latencies, one bisect); metric
families are only built when a scrape reads :meth:`DomainSeries.snapshot`.
"""

from __future__ import annotations

from typing import Any

from kefu.core.stats import Histogram, Labels, labelled
from kefu.core.types import Event


def _bump(counts: dict, key: Any, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by


def _pairs(names: tuple[str, ...], counts: dict) -> dict[Labels, Any]:
    return {tuple(zip(names, (str(k) for k in key), strict=True)): v for key, v in counts.items()}


class DomainSeries:
    """Counters, gauges and histograms of one kernel, from what plugins emit."""

    def __init__(self, latency_buckets: list[float], wait_buckets: list[float]) -> None:
        self._latency_buckets = latency_buckets
        self.events: dict[str, int] = {}
        self.stored: dict[tuple[str, str], int] = {}  # (transport, sender_kind)
        self.ack: dict[str, Histogram] = {}  # by transport
        self.rejected: dict[tuple[str, str], int] = {}  # (code, processor)
        self.started: dict[str, int] = {}  # by transport
        self.assigned: dict[str, int] = {}  # by policy
        self.wait = Histogram(wait_buckets)
        self.queued: dict[str, set[str]] = {}  # site -> conversation ids waiting
        self.presence: dict[str, int] = {}  # by status
        self.reloads = 0
        self.connections: dict[tuple[str, str], int] = {}  # (transport, kind), a gauge
        self.opened: dict[tuple[str, str], int] = {}
        self.disconnects: dict[tuple[str, str], int] = {}  # (transport, reason)
        self._handlers = {
            "message.stored": self._stored,
            "message.rejected": self._rejected,
            "conversation.started": self._started,
            "conversation.queued": self._queued,
            "queue.updated": self._queue_updated,
            "conversation.assigned": self._assigned,
            "conversation.resolved": self._dequeued,  # a queued conversation can be resolved
            "agent.presence": self._presence,
            "config.reloaded": self._reloaded,
        }

    # -- recording ------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        events, kind = self.events, event.type
        events[kind] = events.get(kind, 0) + 1
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(event.site_id, event.data)

    def _stored(self, site_id: str | None, data: dict) -> None:
        # the hot one: once per message; label values become strings at scrape time
        transport = data.get("transport") or "none"
        key = (transport, data.get("sender_kind") or "unknown")
        stored = self.stored
        stored[key] = stored.get(key, 0) + 1
        ack_ms = data.get("ack_ms")
        if isinstance(ack_ms, (int, float)):
            histogram = self.ack.get(transport)
            if histogram is None:
                histogram = self.ack[transport] = Histogram(self._latency_buckets)
            histogram.observe(ack_ms * 0.001)

    def _rejected(self, site_id: str | None, data: dict) -> None:
        _bump(self.rejected, (data.get("code"), data.get("processor")))

    def _started(self, site_id: str | None, data: dict) -> None:
        _bump(self.started, data.get("transport") or "none")

    def _queued(self, site_id: str | None, data: dict) -> None:
        if site_id:
            self.queued.setdefault(site_id, set()).add(data.get("conversation_id"))

    def _queue_updated(self, site_id: str | None, data: dict) -> None:
        if site_id:
            self.queued[site_id] = set(data.get("positions") or ())

    def _assigned(self, site_id: str | None, data: dict) -> None:
        _bump(self.assigned, data.get("policy") or "unknown")
        waited = data.get("waited_s")
        if isinstance(waited, (int, float)):
            self.wait.observe(max(0.0, waited))
        self._dequeued(site_id, data)

    def _dequeued(self, site_id: str | None, data: dict) -> None:
        waiting = self.queued.get(site_id or "")
        if waiting is not None:
            waiting.discard(data.get("conversation_id"))
            if not waiting:
                del self.queued[site_id]

    def _presence(self, site_id: str | None, data: dict) -> None:
        _bump(self.presence, data.get("status"))

    def _reloaded(self, site_id: str | None, data: dict) -> None:
        self.reloads += 1

    def connected(self, connection: Any) -> None:
        key = (connection.transport, connection.principal.kind)
        _bump(self.connections, key)
        _bump(self.opened, key)

    def disconnected(self, connection: Any, reason: str) -> None:
        _bump(self.connections, (connection.transport, connection.principal.kind), -1)
        _bump(self.disconnects, (connection.transport, reason))

    def known_transports(self, transports: list[str], kinds: tuple[str, ...]) -> None:
        """Start the connection gauges at 0, so that a dashboard sees every transport."""
        for transport in transports:
            for kind in kinds:
                self.connections.setdefault((transport, kind), 0)

    # -- reading ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything in the ``kefu_stats`` shape (names without the ``kefu_`` prefix)."""
        return {
            "events_total": labelled("type", self.events),
            "connections": _pairs(("transport", "kind"), self.connections),
            "connections_opened_total": _pairs(("transport", "kind"), self.opened),
            "disconnects_total": _pairs(("transport", "reason"), self.disconnects),
            "messages_stored_total": _pairs(("transport", "sender_kind"), self.stored),
            "message_ack_seconds": labelled(
                "transport", {k: h.snapshot() for k, h in self.ack.items()}
            ),
            "messages_rejected_total": _pairs(("code", "processor"), self.rejected),
            "conversations_started_total": labelled("transport", self.started),
            "routing_assignments_total": labelled("policy", self.assigned),
            "routing_wait_seconds": self.wait.snapshot(),
            "routing_queue_length": sum(len(ids) for ids in self.queued.values()),
            "agent_presence_total": labelled("status", self.presence),
            "config_reloads_total": self.reloads,
        }

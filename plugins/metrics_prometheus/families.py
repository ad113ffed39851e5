"""``kefu_stats``-shaped dictionaries as Prometheus metric families.

A value is a number, a histogram snapshot (``{"buckets", "sum", "count"}``) or
a dict of label tuples to either. The type follows the shape and the name: a
histogram, a counter when the name ends in ``_total``, a gauge otherwise. A
malformed entry is logged once and left out; it never fails a scrape.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

PREFIX = "kefu_"
NAME = re.compile(r"[a-z_][a-z0-9_]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

#: One-line meanings for ``# HELP``; docs/metrics.md has the full table.
HELP = {
    "events_total": "Domain events seen, by type",
    "connections": "Open client connections, by transport and principal kind",
    "connections_opened_total": "Client connections opened, by transport and principal kind",
    "disconnects_total": "Client connections closed, by transport and reason",
    "messages_stored_total": "Messages stored (acknowledged once), by transport and sender kind",
    "message_ack_seconds": "Frame received to message stored and ack queued, by transport",
    "messages_rejected_total": "Messages refused by a pipeline processor, by code and processor",
    "conversations_started_total": "Conversations started by visitors, by transport",
    "routing_assignments_total": "Conversations assigned by routing, by policy",
    "routing_wait_seconds": "Time a conversation waited in the queue before its assignment",
    "routing_queue_length": "Conversations waiting in routing queues (all sites)",
    "agent_presence_total": "Agent presence changes, by status",
    "config_reloads_total": "Configuration reloads applied",
    "config_reload_failures_total": "Configuration changes refused as invalid",
    "hook_failures_total": "Plugin hook implementations that raised, by plugin and hook",
    "event_loop_lag_seconds": "How late the loop-lag probe woke up",
    "event_loop_lag_max_seconds": "Largest loop lag over the recent window",
    "gateway_frames_in_total": "Client frames received, by op (unknown ops as op=unknown)",
    "gateway_frames_out_total": "Frames queued for clients, by op",
    "gateway_frames_inflight": "Frames whose handler is running (pipeline depth)",
    "gateway_envelopes_in_total": "Fan-out envelopes this process received from the bus",
    "gateway_outbox_frames": "Frames queued in all connection outboxes",
    "gateway_outbox_frames_max": "Frames queued in the fullest connection outbox",
    "gateway_shed_frames_total": "Ephemeral frames shed for slow consumers",
    "gateway_delivery_seconds": "Message created to fan-out into recipients' outboxes",
    "gateway_dispatch_seconds": "Time in a frame's handler (pipeline sojourn), by op",
    "storage_appends_waiting": "append_message calls waiting for their group commit",
    "storage_append_batches_total": "Group commits of appended messages",
    "storage_appends_total": "Appends committed (duplicate cids included)",
    "storage_append_batch_size": "Appends per group commit",
    "storage_append_batch_seconds": "Duration of one group commit",
}


def _is_histogram(value: Any) -> bool:
    return isinstance(value, Mapping) and "buckets" in value


def _samples(value: Any) -> list[tuple[tuple[tuple[str, str], ...], Any]]:
    if isinstance(value, Mapping) and not _is_histogram(value):
        return [(tuple((str(k), str(v)) for k, v in key), v) for key, v in value.items()]
    return [((), value)]


def family(name: str, value: Any, help_text: str) -> Metric | None:
    """One metric family (None while it has no sample); ValueError or TypeError if malformed."""
    if not NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")
    samples = _samples(value)
    if not samples:
        return None  # a labelled series nothing has been counted in yet
    names = tuple(label for label, _ in samples[0][0])
    if any(tuple(label for label, _ in labels) != names for labels, _ in samples):
        raise ValueError("every label tuple must name the same labels")
    if not all(LABEL.fullmatch(label) and not label.startswith("__") for label in names):
        raise ValueError(f"invalid label names {names!r}")
    full = PREFIX + name
    if any(_is_histogram(v) for _, v in samples):
        metric: Metric = HistogramMetricFamily(full, help_text, labels=names)
        for labels, snap in samples:
            buckets = [(float(le), int(n)) for le, n in snap["buckets"]]
            if not buckets or not math.isinf(buckets[-1][0]):
                buckets.append((math.inf, int(snap["count"])))
            metric.add_metric(
                [v for _, v in labels],
                [(floatToGoString(le), n) for le, n in buckets],
                float(snap["sum"]),
            )
        return metric
    kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
    metric = kind(full, help_text, labels=names)
    for labels, number in samples:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise TypeError(f"{name}: {number!r} is not a number")
        metric.add_metric([v for _, v in labels], float(number))
    return metric


class Families:
    """Converts whole ``kefu_stats`` answers; remembers what it warned about and who owns a name."""

    def __init__(self) -> None:
        self._warned: set[tuple[str, str]] = set()

    def convert(self, source: str, stats: Any, seen: dict[str, str]) -> Iterator[Metric]:
        """Families for ``stats`` from plugin ``source``; ``seen`` maps names to their owner."""
        if not isinstance(stats, Mapping):
            self._warn(source, "*", f"kefu_stats returned {type(stats).__name__}, not a dict")
            return
        for name, value in stats.items():
            owner = seen.setdefault(str(name), source)
            if owner != source:
                self._warn(source, name, f"name already reported by plugin {owner!r}; ignored")
                continue
            try:
                metric = family(str(name), value, HELP.get(name, f"{name} (plugin {source})"))
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                self._warn(source, name, str(exc))
                continue
            if metric is not None:
                yield metric

    def _warn(self, source: str, name: str, problem: str) -> None:
        if (source, name) not in self._warned:
            self._warned.add((source, name))
            log.warning("metrics: plugin %r, statistic %r left out: %s", source, name, problem)

"""Metrics of every worker from any worker: ``/metrics`` on a bus shared by several processes.

With ``kefu run --workers N`` (or several nodes), a scrape of the one port reaches
one worker at random. So each worker writes its own exposition into the bus's
shared state every ``cluster_interval_s`` seconds (with a ttl of three intervals:
a worker that died drops out), and ``/metrics`` answers every live worker's series,
each sample labelled ``worker="<host>:<port>:<index>"``. The answering worker's own
series are read at scrape time; the others' are at most one interval old.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kefu.core.bus import WorkerBoard

log = logging.getLogger(__name__)


class _Families:
    """A collector over fixed metric families, for :func:`generate_latest`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def labelled(text: str, worker: str) -> list[Metric]:
    """Parse an exposition and add ``worker`` to every sample."""
    families = []
    for family in text_string_to_metric_families(text):
        family.samples = [
            Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
            for s in family.samples
        ]
        families.append(family)
    return families


def merge(parts: list[list[Metric]]) -> list[Metric]:
    """One family per name, with the samples of every worker."""
    merged: dict[str, Metric] = {}
    for families in parts:
        for family in families:
            known = merged.get(family.name)
            if known is None:
                merged[family.name] = family
            else:
                known.samples.extend(family.samples)
    return list(merged.values())


class ClusterMetrics:
    """Publishes this worker's exposition and assembles everyone's."""

    def __init__(self, kernel: Any, registry: Any, interval: float) -> None:
        self.registry = registry
        self.board = WorkerBoard(kernel, "metrics", lambda: generate_latest(registry), interval)
        self.name = self.board.name

    def start(self) -> None:
        self.board.start()

    async def stop(self) -> None:
        await self.board.stop()

    async def exposition(self) -> bytes:
        """Every live worker's series in the text format, labelled by worker."""
        parts = [labelled(generate_latest(self.registry).decode(), self.name)]
        for name, text in (await self.board.others()).items():
            parts.append(labelled(text.decode(), name))
        return generate_latest(_Families(merge(parts)))

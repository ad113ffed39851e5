"""Cheap in-process statistics for :func:`kefu.hooks.events.kefu_stats`.

Hot paths record with plain integer and float arithmetic; nothing is formatted
or exported until a metrics plugin reads the values at scrape time. The shapes
returned here are the ones ``kefu_stats`` documents.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

#: A label set as ``kefu_stats`` takes it: ``(("op", "send"), ("transport", "ws"))``.
Labels = tuple[tuple[str, str], ...]


class Histogram:
    """A fixed-bucket histogram: :meth:`observe` costs one bisect and two additions.

    ``bounds`` are the finite upper bounds (inclusive, as Prometheus' ``le``);
    a last ``+Inf`` bucket is implied.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        finite = sorted({float(b) for b in bounds if not math.isinf(b)})
        if not finite:
            raise ValueError("a histogram needs at least one finite bucket bound")
        self.bounds: tuple[float, ...] = tuple(finite)
        self.counts: list[int] = [0] * (len(finite) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [(upper_bound, cumulative_count), ..., (inf, count)], "sum", "count"}``."""
        buckets, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            buckets.append((bound, running))
        return {"buckets": buckets, "sum": self.sum, "count": running}


def labelled(label: str, counts: Mapping[str, Any]) -> dict[Labels, Any]:
    """``{"send": 3}`` keyed by one label as ``{(("op", "send"),): 3}``."""
    return {((label, key),): value for key, value in counts.items()}

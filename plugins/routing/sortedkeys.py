"""A sorted container of unique, totally ordered keys, for the routing indexes.

Keys live in sorted chunks of at most ``2 * LOAD`` (the layout of the
``sortedcontainers`` package, which kefu does not depend on): adding or removing a
key costs a bisection over the chunks' last keys plus a move of at most one chunk,
so O(log n) comparisons with a small bounded copy, and the first key is O(1). A
rank (how many keys come before one) adds up chunk lengths: O(n / LOAD).

Callers make keys unique (they end with an id or a counter), so that removing a key
removes exactly one entry.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from typing import Any

LOAD = 256


class SortedKeys:
    """Unique keys in ascending order."""

    __slots__ = ("_chunks", "_len", "_maxes")

    def __init__(self, keys: Iterable[Any] = ()) -> None:
        ordered = sorted(keys)
        self._chunks: list[list[Any]] = [
            ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)
        ]
        self._maxes: list[Any] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __contains__(self, key: Any) -> bool:
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        return j < len(chunk) and chunk[j] == key

    def add(self, key: Any) -> None:
        maxes = self._maxes
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            self._len = 1
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            chunk = self._chunks[i]
            chunk.append(key)
            maxes[i] = key
        else:
            chunk = self._chunks[i]
            insort(chunk, key)
        self._len += 1
        if len(chunk) > 2 * LOAD:
            half = chunk[LOAD:]
            del chunk[LOAD:]
            self._chunks.insert(i + 1, half)
            maxes[i] = chunk[-1]
            maxes.insert(i + 1, half[-1])

    def discard(self, key: Any) -> bool:
        """Remove ``key``; False when it was not there."""
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            return False
        del chunk[j]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del maxes[i]
        else:
            maxes[i] = chunk[-1]
        return True

    def first(self) -> Any:
        """The smallest key, None when empty."""
        return self._chunks[0][0] if self._chunks else None

    def __iter__(self) -> Iterator[Any]:
        """Ascending. Do not add or remove while iterating (copy with ``list()``)."""
        for chunk in self._chunks:
            yield from chunk

    def after(self, key: Any) -> Iterator[Any]:
        """Keys strictly greater than ``key``, ascending (same caveat as iteration)."""
        i = bisect_right(self._maxes, key)  # chunks before it hold no key > key
        for n in range(i, len(self._chunks)):
            chunk = self._chunks[n]
            start = bisect_right(chunk, key) if n == i else 0
            yield from chunk[start:]

    def rank(self, key: Any) -> int:
        """How many keys are smaller than ``key``."""
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return self._len
        before = sum(len(chunk) for chunk in self._chunks[:i])
        return before + bisect_left(self._chunks[i], key)

"""The waiting line of one site and the wait estimate.

Order: higher ``priority`` first, then oldest ``queued_at`` first, then
arrival order. A visitor's *position* counts only the conversations ahead of
theirs that need the same skill: other departments do not wait for the same
agents.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from kefu.plugins.routing.snapshots import ConversationSnapshot


class RoutingQueue:
    """Conversations of one site waiting for an agent, kept in routing order."""

    def __init__(self) -> None:
        self._keys: list[tuple[int, float, int]] = []
        self._by_key: dict[tuple[int, float, int], ConversationSnapshot] = {}
        self._key_of: dict[str, tuple[int, float, int]] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._key_of

    def push(self, conversation: ConversationSnapshot) -> None:
        """Add or replace (a changed priority re-sorts it) a waiting conversation."""
        self.remove(conversation.id)
        key = (-conversation.priority, conversation.queued_at, next(self._counter))
        bisect.insort(self._keys, key)
        self._by_key[key] = conversation
        self._key_of[conversation.id] = key

    def remove(self, conversation_id: str) -> ConversationSnapshot | None:
        key = self._key_of.pop(conversation_id, None)
        if key is None:
            return None
        del self._keys[bisect.bisect_left(self._keys, key)]
        return self._by_key.pop(key)

    def get(self, conversation_id: str) -> ConversationSnapshot | None:
        key = self._key_of.get(conversation_id)
        return None if key is None else self._by_key[key]

    def ordered(self) -> list[ConversationSnapshot]:
        """A copy in routing order: safe to iterate while claiming removes entries."""
        return [self._by_key[key] for key in self._keys]

    def __iter__(self) -> Iterator[ConversationSnapshot]:
        return iter(self.ordered())

    def positions(self) -> dict[str, int]:
        """Position of every waiting conversation (1 = next), counted per skill."""
        seen: dict[str | None, int] = {}
        result = {}
        for key in self._keys:
            conversation = self._by_key[key]
            seen[conversation.skill] = seen.get(conversation.skill, 0) + 1
            result[conversation.id] = seen[conversation.skill]
        return result


class HandleTimes:
    """Recent handle time (assignment to resolution) per site and skill, as a moving average."""

    def __init__(self, default_s: float = 300.0, alpha: float = 0.05) -> None:
        self.default_s = default_s
        self.alpha = alpha
        self._mean: dict[tuple[str, str | None], float] = {}

    def observe(self, site_id: str, skill: str | None, seconds: float) -> None:
        if seconds < 0:
            return
        for key in {(site_id, skill), (site_id, None)}:
            old = self._mean.get(key)
            self._mean[key] = seconds if old is None else old + self.alpha * (seconds - old)

    def mean(self, site_id: str, skill: str | None) -> float:
        found = self._mean.get((site_id, skill))
        if found is None:
            found = self._mean.get((site_id, None), self.default_s)
        return found


def estimate_wait(
    position: int, handle_s: float, pool_capacity: int, pool_spare: int
) -> float | None:
    """Seconds until the conversation at ``position`` should get an agent.

    The first ``pool_spare`` waiting conversations fit in free slots now; after
    that a slot frees about every ``handle_s / pool_capacity`` seconds while
    every able agent is busy. ``pool_capacity`` counts the slots of the agents
    who could take it (every filter but capacity); with none there is no
    honest estimate and the answer is None.
    """
    if pool_capacity <= 0:
        return None
    ahead = max(position - pool_spare, 0)
    return ahead * handle_s / pool_capacity

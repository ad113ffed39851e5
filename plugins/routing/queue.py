"""The waiting line of one site and the wait estimate.

Order: higher ``priority`` first, then oldest ``queued_at`` first, then
arrival order. A visitor's *position* counts only the conversations ahead of
theirs that need the same skill: other departments do not wait for the same
agents.

The line is kept per skill (the department a conversation needs; None for
"anyone"), each in a :class:`~kefu.plugins.routing.sortedkeys.SortedKeys`: adding,
removing and finding the head of a skill cost O(log n), a position O(n / 256).
A routing pass walks only the heads of the skills somebody has room for; a
conversation that nobody with room could take is *parked* (it keeps its place
and position) until an agent who serves its skill gets room again.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator

from kefu.plugins.routing.snapshots import ConversationSnapshot
from kefu.plugins.routing.sortedkeys import SortedKeys

Key = tuple[int, float, int]


class RoutingQueue:
    """Conversations of one site waiting for an agent, kept in routing order per skill."""

    def __init__(self) -> None:
        self._key_of: dict[str, Key] = {}
        self._by_key: dict[Key, ConversationSnapshot] = {}
        self._waiting: dict[str | None, SortedKeys] = {}  # every waiting key, per skill
        self._active: dict[str | None, SortedKeys] = {}  # the keys a pass looks at
        self._parked: dict[str | None, set[Key]] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._key_of)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._key_of

    def push(self, conversation: ConversationSnapshot) -> None:
        """Add or replace (a changed priority re-sorts it) a waiting conversation; one read
        again unchanged keeps its place among equals."""
        old = self._key_of.get(conversation.id)
        self.remove(conversation.id)
        place = (-conversation.priority, conversation.queued_at)
        key = (*place, old[2] if old is not None and old[:2] == place else next(self._counter))
        skill = conversation.skill
        self._key_of[conversation.id] = key
        self._by_key[key] = conversation
        self._bucket(self._waiting, skill).add(key)
        self._bucket(self._active, skill).add(key)

    def remove(self, conversation_id: str) -> ConversationSnapshot | None:
        key = self._key_of.pop(conversation_id, None)
        if key is None:
            return None
        conversation = self._by_key.pop(key)
        skill = conversation.skill
        self._drop(self._waiting, skill, key)
        parked = self._parked.get(skill)
        if parked is not None and key in parked:
            parked.discard(key)
            if not parked:
                del self._parked[skill]
        else:
            self._drop(self._active, skill, key)
        return conversation

    def get(self, conversation_id: str) -> ConversationSnapshot | None:
        key = self._key_of.get(conversation_id)
        return None if key is None else self._by_key[key]

    # -- what a pass walks -------------------------------------------------------------
    def head(self, skill: str | None) -> ConversationSnapshot | None:
        """The first conversation of the skill that is not parked."""
        keys = self._active.get(skill)
        return None if not keys else self._by_key[keys.first()]

    def head_key(self, skill: str | None) -> Key | None:
        keys = self._active.get(skill)
        return None if not keys else keys.first()

    def active_skills(self) -> list[str | None]:
        """Skills with a conversation a pass should look at."""
        return list(self._active)

    def park(self, conversation_id: str) -> None:
        """Nobody with room may take it now: skip it until :meth:`unpark`."""
        key = self._key_of.get(conversation_id)
        if key is None:
            return
        skill = self._by_key[key].skill
        if self._drop(self._active, skill, key):
            self._parked.setdefault(skill, set()).add(key)

    def unpark(self, skills: Iterable[str | None] | None = None) -> int:
        """Let a pass look at the parked conversations of ``skills`` (all by default)
        again; returns how many."""
        wanted = list(self._parked) if skills is None else skills
        count = 0
        for skill in wanted:
            keys = self._parked.pop(skill, None)
            if keys:
                active = self._bucket(self._active, skill)
                for key in keys:
                    active.add(key)
                count += len(keys)
        return count

    def restore(self, conversation_id: str) -> None:
        """Undo :meth:`park` for one conversation."""
        key = self._key_of.get(conversation_id)
        if key is None:
            return
        skill = self._by_key[key].skill
        parked = self._parked.get(skill)
        if parked is not None and key in parked:
            parked.discard(key)
            if not parked:
                del self._parked[skill]
            self._bucket(self._active, skill).add(key)

    def parked(self) -> int:
        return sum(len(keys) for keys in self._parked.values())

    # -- order and positions -------------------------------------------------------------
    def ordered(self) -> list[ConversationSnapshot]:
        """Every waiting conversation in routing order (a copy)."""
        return [self._by_key[key] for key in heapq.merge(*self._waiting.values())]

    def of_skills(self, skills: Iterable[str | None]) -> list[ConversationSnapshot]:
        """The waiting conversations needing one of ``skills``, in routing order (a copy)."""
        buckets = [self._waiting[s] for s in set(skills) if s in self._waiting]
        return [self._by_key[key] for key in heapq.merge(*buckets)]

    def __iter__(self) -> Iterator[ConversationSnapshot]:
        return iter(self.ordered())

    def heads(self) -> list[ConversationSnapshot]:
        """The first waiting conversation of each skill (one per skill, no order)."""
        return [self._by_key[keys.first()] for keys in self._waiting.values() if keys]

    def skills(self) -> list[str | None]:
        return list(self._waiting)

    def positions(self) -> dict[str, int]:
        """Position of every waiting conversation (1 = next), counted per skill."""
        result = {}
        for keys in self._waiting.values():
            for position, key in enumerate(keys, start=1):
                result[self._by_key[key].id] = position
        return result

    def would_be(self, conversation: ConversationSnapshot) -> int:
        """The position a conversation not in line yet would take (ties: after the others)."""
        keys = self._waiting.get(conversation.skill)
        if keys is None:
            return 1
        return keys.rank((-conversation.priority, conversation.queued_at, float("inf"))) + 1

    def position(self, conversation_id: str) -> int | None:
        key = self._key_of.get(conversation_id)
        if key is None:
            return None
        return self._waiting[self._by_key[key].skill].rank(key) + 1

    @staticmethod
    def _bucket(buckets: dict, skill: str | None) -> SortedKeys:
        keys = buckets.get(skill)
        if keys is None:
            keys = buckets[skill] = SortedKeys()
        return keys

    @staticmethod
    def _drop(buckets: dict, skill: str | None, key: Key) -> bool:
        keys = buckets.get(skill)
        if keys is None or not keys.discard(key):
            return False
        if not keys:
            del buckets[skill]
        return True


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

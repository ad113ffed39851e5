"""Plain snapshots the routing engine works on, and what it answers.

The engine never reads storage itself: a *source* (:class:`RoutingSource`)
builds these snapshots from wherever the truth lives (the storage backend for a
live server, the simulated world for ``tests/bench/routing_sim.py``) and
performs the atomic claim. Filters, weight factors and policies are pure
functions of ``(conversation, agent)`` snapshots, so they are easy to test and
behave the same live and simulated.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

ONLINE, AWAY, OFFLINE = "online", "away", "offline"
AGENT_STATUSES = (ONLINE, AWAY, OFFLINE)


class RoutingInputError(ValueError):
    """A snapshot with impossible values (negative capacity, unknown status, ...)."""


@dataclass(slots=True)
class AgentSnapshot:
    """One agent as a routing pass sees it.

    ``open_count`` counts the conversations the agent holds *now* (state
    ``assigned``), never lifetime ones: an agent back from leave is not flooded.
    """

    id: str
    site_id: str
    status: str = ONLINE
    accepting: bool = True
    capacity: int = 5
    open_count: int = 0
    skills: frozenset[str] = frozenset()
    #: UNIX time of the last assignment; None when never assigned.
    last_assigned_at: float | None = None
    #: Recent average time to the first reply, in seconds; None when unknown.
    first_response_s: float | None = None
    #: Recent satisfaction, 0 (bad) .. 1 (good); None when unknown.
    satisfaction: float | None = None
    #: Conversations this agent declined or let time out: never offered to them again.
    declined: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise RoutingInputError(f"agent {self.id!r}: capacity must be an integer")
        if self.capacity < 0:
            raise RoutingInputError(
                f"agent {self.id!r}: capacity must be 0 or more, got {self.capacity}"
            )
        if self.open_count < 0:
            raise RoutingInputError(
                f"agent {self.id!r}: open_count must be 0 or more, got {self.open_count}"
            )
        if self.status not in AGENT_STATUSES:
            raise RoutingInputError(
                f"agent {self.id!r}: status must be one of {', '.join(AGENT_STATUSES)}, "
                f"got {self.status!r}"
            )
        if self.satisfaction is not None and not 0 <= self.satisfaction <= 1:
            raise RoutingInputError(f"agent {self.id!r}: satisfaction must be within 0..1")
        self.skills = frozenset(self.skills)
        self.declined = frozenset(self.declined)

    @property
    def spare(self) -> int:
        """Free slots (0 when full or over capacity)."""
        return max(self.capacity - self.open_count, 0)


@dataclass(slots=True)
class ConversationSnapshot:
    """One waiting conversation as a routing pass sees it.

    ``now`` is the clock of the routing pass (the engine sets it; simulated time
    in the simulator) so that time-based filters and factors stay pure.
    ``hours`` is the site's business hours (any object with ``is_open(ts)``),
    None when always open.
    """

    id: str
    site_id: str
    skill: str | None = None
    priority: int = 0
    queued_at: float = 0.0
    previous_agent_id: str | None = None
    now: float = 0.0
    hours: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise RoutingInputError(f"conversation {self.id!r}: priority must be an integer")


class Claim(enum.Enum):
    """The outcome of one atomic claim attempt."""

    CLAIMED = "claimed"  # the conversation is now the agent's
    GONE = "gone"  # no longer waiting (someone else won, resolved, abandoned)
    AGENT_FULL = "agent_full"  # the capacity re-check failed; try another agent
    AGENT_UNAVAILABLE = "agent_unavailable"  # agent vanished or went away meanwhile


@dataclass(frozen=True, slots=True)
class Assignment:
    """A conversation given to an agent by a routing pass or a manual pick."""

    conversation_id: str
    agent_id: str
    site_id: str
    waited_s: float
    policy: str


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """What a waiting visitor is told: position (1 = next) and estimated wait.

    ``eta_s`` is None when nobody who could take the conversation is online
    (or the site is closed): there is no honest estimate then.
    """

    conversation_id: str
    position: int
    eta_s: float | None
    eligible_agents: int


class RoutingSource(Protocol):
    """Where snapshots come from and where claims are made atomic."""

    async def agents(self, site_id: str) -> list[AgentSnapshot]:
        """Fresh snapshots of the site's agents (every status; filters decide)."""

    async def claim(self, conversation: ConversationSnapshot, agent: AgentSnapshot) -> Claim:
        """Give the conversation to the agent only if it is still waiting and the agent
        still has room; must be atomic against every other claimer."""

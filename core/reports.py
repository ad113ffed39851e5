"""What reports are made of: one row of facts per conversation, from the storage.

A backend that can answer reports implements :class:`Reportable` (every built-in
one does); the ``reports`` plugin turns the facts into volumes, percentiles,
CSAT and bot containment. The facts are the same on every backend: the memory
backend computes them with :func:`facts_of`, the reference the others must agree
with (``tests/storage_contract/test_reports_contract.py``).

What counts:

- messages of ``type`` ``"event"`` count for nothing (no message count, no reply);
- ``first_agent_reply_at``: the first message an agent sent (``sender_kind`` ``"agent"``);
- ``agent_id``: the conversation's assignee (the last agent it went to);
- ``rating``: ``meta["rating"]["score"]`` on ``meta["rating"]["scale"]`` (the CSAT the
  visitor gave, see the agent_tools plugin);
- ``handoff_at``: when a bot handed it to a human (``meta["bot_handoff"]["at"]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from kefu.core.domain import Conversation, Message

#: Most facts one ``conversation_facts`` call returns, whatever ``limit`` asks.
FACTS_PAGE = 5_000


@dataclasses.dataclass(frozen=True, slots=True)
class ConversationFacts:
    """One conversation as reports see it (times are UNIX seconds)."""

    conversation_id: str
    created_at: float
    state: str
    agent_id: str | None = None
    department: str | None = None
    resolved_at: float | None = None
    first_agent_reply_at: float | None = None
    handoff_at: float | None = None
    rating: int | None = None
    rating_scale: int | None = None
    visitor_messages: int = 0
    agent_messages: int = 0
    bot_messages: int = 0

    @property
    def bot_handled(self) -> bool:
        """A bot answered in it (a bot message, or a bot handed it over)."""
        return self.bot_messages > 0 or self.handoff_at is not None

    @property
    def contained(self) -> bool:
        """The bot handled it and no human ever did (no handoff, no agent, no assignee)."""
        return (
            self.bot_handled
            and self.handoff_at is None
            and self.agent_messages == 0
            and self.agent_id is None
        )

    @property
    def answered_from(self) -> float:
        """Where the first-response clock starts: the handoff, else the creation."""
        return self.handoff_at if self.handoff_at is not None else self.created_at


def meta_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """The facts kept in a conversation's ``meta``: rating, scale and handoff time."""
    out: dict[str, Any] = {"rating": None, "rating_scale": None, "handoff_at": None}
    rating = meta.get("rating")
    if isinstance(rating, dict) and isinstance(rating.get("score"), int):
        out["rating"] = rating["score"]
        scale = rating.get("scale")
        out["rating_scale"] = scale if isinstance(scale, int) else None
    handoff = meta.get("bot_handoff")
    if isinstance(handoff, dict) and isinstance(handoff.get("at"), int | float):
        out["handoff_at"] = float(handoff["at"])
    return out


def facts_of(conversation: Conversation, messages: Iterable[Message]) -> ConversationFacts:
    """The reference computation (the memory and Mongo backends use it)."""
    counts = {"visitor": 0, "agent": 0, "bot": 0}
    first_reply: float | None = None
    for m in messages:
        if m.type == "event" or m.sender_kind not in counts:
            continue
        counts[m.sender_kind] += 1
        if m.sender_kind == "agent" and (first_reply is None or m.created_at < first_reply):
            first_reply = m.created_at
    return ConversationFacts(
        conversation_id=conversation.id,
        created_at=conversation.created_at,
        state=conversation.state,
        agent_id=conversation.assignee_id,
        department=conversation.department,
        resolved_at=conversation.resolved_at,
        first_agent_reply_at=first_reply,
        visitor_messages=counts["visitor"],
        agent_messages=counts["agent"],
        bot_messages=counts["bot"],
        **meta_facts(conversation.meta),
    )


@runtime_checkable
class Reportable(Protocol):
    """Optional capability of a storage backend: the facts reports are computed from.

    Every built-in backend has it (``isinstance(storage, Reportable)``); with a
    third-party backend without it, ``/v1/reports`` answers 503."""

    async def conversation_facts(
        self,
        site_id: str,
        since: float,
        until: float,
        *,
        after: tuple[float, str] | None = None,
        limit: int = 1000,
    ) -> list[ConversationFacts]:
        """Facts of the site's conversations created in ``[since, until)``, ordered by
        ``(created_at, conversation_id)``, at most ``min(limit, FACTS_PAGE)``. ``after``
        pages: pass ``(created_at, conversation_id)`` of the last fact of a page."""

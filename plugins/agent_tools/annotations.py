"""What agents attach to a conversation: private notes, tags, and the visitor's rating.

- **Notes** (``meta["notes"]``) are for the team only: they travel as ``note`` frames
  to the agent connections watching the conversation and are never delivered to
  the visitor (the REST API does not show ``meta`` or tags to visitors either).
  A transfer's note is kept as a note too.
- **Tags** (``Conversation.tags``) are lower-cased, at most :data:`MAX_TAGS`.
- **CSAT**: when a conversation is resolved its visitor gets ``csat_request``; they
  rate it once, 1 to :data:`CSAT_SCALE`, with an optional comment
  (``meta["rating"]``); ``conversation.rated`` carries the agent and a 0..1 score
  (routing's ``satisfaction`` factor reads it).
"""

from __future__ import annotations

import time
from typing import Any

from kefu.core.domain import RESOLVED, Conversation, new_id
from kefu.core.errors import ApiError
from kefu.core.types import Principal

MAX_TAGS = 20
#: Ratings run from 1 (bad) to 5 (good), the usual CSAT scale.
CSAT_SCALE = 5


async def conversation_for(kernel: Any, principal: Principal, conversation_id: str, action: str):
    found = await kernel.storage.get_conversation(principal.site_id, conversation_id)
    if found is None:
        raise ApiError(404, "conversation_not_found", "no such conversation in your site")
    if not await kernel.hooks.permits(principal, action, found):
        raise ApiError(403, "forbidden", f"you may not {action} this conversation")
    return found


def _agents_only(principal: Principal, what: str) -> None:
    if principal.kind != "agent":
        raise ApiError(403, "forbidden", f"only agents {what}")


class Annotations:
    """Notes, tags and ratings for one kernel (``edits``: :class:`~.edits.Edits`)."""

    def __init__(self, kernel: Any, edits: Any) -> None:
        self.kernel = kernel
        self.edits = edits

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("agent_tools")

    # -- notes ------------------------------------------------------------------------
    async def add_note(
        self, principal: Principal, conversation_id: str, text: str, *, source: str = "agent"
    ) -> dict[str, Any]:
        _agents_only(principal, "write notes")
        found = await conversation_for(self.kernel, principal, conversation_id, "conversation.note")
        note = {
            "id": new_id(),
            "agent_id": principal.id,
            "text": text,
            "source": source,
            "created_at": time.time(),
        }
        keep = self.settings.max_notes

        def append(conversation: Conversation) -> None:
            notes = [*conversation.meta.get("notes", ()), note][-keep:]
            conversation.meta = {**conversation.meta, "notes": notes}

        await self.edits.conversation(found.site_id, found.id, append)
        gateway = self.kernel.delivery
        if gateway is not None:
            frame = {"op": "note", "conversation_id": found.id, "note": note}
            await gateway.publish_agents(found.site_id, frame, watchers_of=found.id)
        await self.kernel.emit(
            "conversation.note_added",
            found.site_id,
            conversation_id=found.id,
            note_id=note["id"],
            agent_id=principal.id,
            source=source,
        )
        return note

    async def notes(self, principal: Principal, conversation_id: str) -> list[dict[str, Any]]:
        _agents_only(principal, "read notes")
        found = await conversation_for(self.kernel, principal, conversation_id, "conversation.note")
        return list(found.meta.get("notes", ()))

    # -- tags -------------------------------------------------------------------------
    async def tag(
        self,
        principal: Principal,
        conversation_id: str,
        add: list[str] = (),
        remove: list[str] = (),
    ) -> list[str]:
        _agents_only(principal, "tag conversations")
        found = await conversation_for(self.kernel, principal, conversation_id, "conversation.tag")
        added = [t.strip().lower() for t in add]
        removed = {t.strip().lower() for t in remove}
        if any(not t for t in added):
            raise ApiError(400, "invalid_field", "a tag cannot be blank", field="add")

        def change(conversation: Conversation) -> list[str]:
            tags = [t for t in conversation.tags if t not in removed]
            tags += [t for t in dict.fromkeys(added) if t not in tags]
            if len(tags) > MAX_TAGS:
                raise ApiError(409, "too_many_tags", f"a conversation has at most {MAX_TAGS} tags")
            conversation.tags = tags
            return tags

        _, tags = await self.edits.conversation(found.site_id, found.id, change)
        gateway = self.kernel.delivery
        if gateway is not None:
            frame = {"op": "tags", "conversation_id": found.id, "tags": tags, "by": principal.id}
            await gateway.publish_site_agents(found.site_id, frame)
        await self.kernel.emit(
            "conversation.tagged",
            found.site_id,
            conversation_id=found.id,
            tags=tags,
            added=added,
            removed=sorted(removed),
            by_id=principal.id,
        )
        return tags

    # -- satisfaction -------------------------------------------------------------------
    async def ask_rating(self, site_id: str, conversation_id: str) -> None:
        """At resolve: the visitor is asked to rate (``csat_request``), unless it was a bot's."""
        if not self.settings.csat:
            return
        found = await self.kernel.storage.get_conversation(site_id, conversation_id)
        gateway = self.kernel.delivery
        if found is None or found.assignee_id is None or gateway is None or "rating" in found.meta:
            return
        frame = {"op": "csat_request", "conversation_id": found.id, "scale": CSAT_SCALE}
        await gateway.publish_visitor(found, frame)

    async def rate(
        self, principal: Principal, conversation_id: str, score: int, comment: str | None
    ) -> dict[str, Any]:
        if principal.kind != "visitor":
            raise ApiError(403, "forbidden", "the visitor rates their conversation")
        found = await conversation_for(self.kernel, principal, conversation_id, "conversation.rate")
        scale = CSAT_SCALE
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= scale:
            raise ApiError(
                400,
                "invalid_field",
                f"score must be a whole number from 1 to {scale}",
                field="score",
            )
        rating = {"score": score, "scale": scale, "comment": comment, "rated_at": time.time()}

        def change(conversation: Conversation) -> str:
            if conversation.state != RESOLVED:
                raise ApiError(409, "not_resolved", "rate a conversation once it is resolved")
            if conversation.assignee_id is None:
                raise ApiError(409, "nothing_to_rate", "no agent answered this conversation")
            if "rating" in conversation.meta:
                raise ApiError(409, "already_rated", "this conversation was rated already")
            conversation.meta = {**conversation.meta, "rating": rating}
            return conversation.assignee_id

        _, agent_id = await self.edits.conversation(found.site_id, found.id, change)
        await self.kernel.emit(
            "conversation.rated",
            found.site_id,
            conversation_id=found.id,
            agent_id=agent_id,
            score=(score - 1) / (scale - 1),
            rating=score,
            scale=scale,
        )
        delivery = self.kernel.delivery
        if delivery is not None:  # open consoles show the rating at once
            frame = {
                "op": "conversation",
                "event": "rated",
                "conversation": {"id": found.id, "state": found.state, "rating": rating},
            }
            await delivery.publish_site_agents(found.site_id, frame)
        return rating

"""Conversations, their message history and visitors: read-only views for consoles and widgets.

Every lookup is made inside the caller's site, so another site's id is
simply "not found". Visitors only ever see their own conversations.
"""

from __future__ import annotations

import logging

from kefu.core.domain import Conversation
from kefu.plugins.rest_api import reads
from kefu.plugins.rest_api.endpoint import ApiError, Call, not_found
from kefu.plugins.rest_api.models import (
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    VisitorOut,
)

log = logging.getLogger(__name__)

#: The most messages of a history page while ``history_pages`` is shed (degradation level 1).
SHED_PAGE = 20


class HistoryPages:
    """Whether history pages are smaller now (``history_pages`` shed under pressure)."""

    __slots__ = ("shed",)

    def __init__(self, _kernel=None) -> None:
        self.shed = False


def history_pages(kernel) -> HistoryPages:
    return kernel.plugin_state("rest_api.history_pages", HistoryPages)


#: The ``meta`` keys a visitor reads of their own conversations: tags, private notes and
#: routing data (who declined, left messages) are for agents.
VISITOR_META = ("transport", "rating")


def conversation_out(call: Call, conversation: Conversation) -> ConversationOut:
    """The conversation as the caller may see it."""
    out = ConversationOut.model_validate(conversation)
    if call.principal.kind == "visitor":
        out.tags = []
        out.meta = {k: v for k, v in out.meta.items() if k in VISITOR_META}
    return out


async def list_conversations(call: Call) -> ConversationPage:
    await call.require("conversation.read", call.site_id)
    query = call.query
    assignee = call.principal.id if query.assignee == "me" else query.assignee
    visitor_id = call.principal.id if call.principal.kind == "visitor" else None
    found = await call.kernel.storage.list_conversations(
        call.site_id,
        state=query.state,
        assignee_id=assignee,
        visitor_id=visitor_id,
        limit=query.limit + 1,
        before=query.before,
    )
    page = found[: query.limit]
    next_before = page[-1].updated_at if len(found) > query.limit else None
    return ConversationPage(
        conversations=await conversations_out(call, page), next_before=next_before
    )


async def conversations_out(call: Call, found: list[Conversation]) -> list[ConversationOut]:
    """A list as the caller may see it, with an agent's unread counts (reads.py)."""
    return await reads.with_unread(call, [conversation_out(call, c) for c in found])


async def _conversation(call: Call, action: str) -> Conversation:
    conversation = await call.kernel.storage.get_conversation(call.site_id, call.params["id"])
    if conversation is None:
        raise not_found("conversation")
    await call.require(action, conversation)
    return conversation


async def get_conversation(call: Call) -> ConversationOut:
    conversation = await _conversation(call, "conversation.read")
    return (await conversations_out(call, [conversation]))[0]


async def list_messages(call: Call) -> MessagePage:
    """History pages: newest page by default, ``before_seq`` for older, ``after_seq`` for newer."""
    conversation = await _conversation(call, "message.read")
    query, storage = call.query, call.kernel.storage
    if query.after_seq is not None and query.before_seq is not None:
        raise ApiError(400, "invalid_query", "give after_seq or before_seq, not both")
    limit = query.limit
    if history_pages(call.kernel).shed:  # under pressure: smaller pages, has_more says so
        limit = min(limit, SHED_PAGE)
    if query.after_seq is not None:
        found = await storage.list_messages(
            call.site_id, conversation.id, after_seq=query.after_seq, limit=limit + 1
        )
        page, has_more = found[:limit], len(found) > limit
    else:
        before = query.before_seq if query.before_seq is not None else conversation.last_seq + 1
        found = await storage.list_messages_before(
            call.site_id, conversation.id, before_seq=before, limit=limit + 1
        )
        has_more = len(found) > limit
        page = found[-limit:]
    messages = [MessageOut.model_validate(m) for m in page]
    return MessagePage(messages=messages, has_more=has_more, limit=limit)


async def get_visitor(call: Call) -> VisitorOut:
    visitor = await call.kernel.storage.get_visitor(call.site_id, call.params["id"])
    if visitor is None:
        raise not_found("visitor")
    await call.require("visitor.read", visitor)
    return VisitorOut.model_validate(visitor)

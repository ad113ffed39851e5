"""Search, conversation filters and saved views (issue 14): what a console's inbox needs.

``GET /v1/search`` finds messages and contacts; ``GET /v1/search/conversations``
filters conversations (status, agent, department, tag, creation date) and, with
``q``, keeps those whose messages or contact match. Both need a storage backend
with the :class:`~kefu.core.storage.Searchable` capability (every built-in one).
Saved views are plugin records (kind ``console.view``) shared by the site's agents.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from kefu.core.domain import CONVERSATION_STATES, Conversation, Message
from kefu.core.storage import ConversationFilter, Searchable, VersionConflict, search_terms
from kefu.plugins.rest_api import models as m
from kefu.plugins.rest_api.conversations import conversations_out
from kefu.plugins.rest_api.endpoint import ApiError, Call, Endpoint, not_found

VIEW_KIND = "console.view"
MAX_VIEWS = 100
#: Most conversations a text filter collects matches from (messages + contacts).
TEXT_MATCHES = 200
SNIPPET = 60

Query = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=m.TEXT_PATTERN)]
Id = Annotated[str, StringConstraints(pattern=m.ID_PATTERN)]
Name = Annotated[str, StringConstraints(max_length=100, pattern=m.TEXT_PATTERN)]
STATES = r"^(bot|queued|assigned|resolved|open)(,(bot|queued|assigned|resolved|open))*$"
Time = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]


# -- models ------------------------------------------------------------------------------------
class SearchQuery(BaseModel):
    q: Query = Field(description="Words to find; every one must occur (substrings, any case).")
    limit: int = Field(20, ge=1, le=100, description="Most messages and most contacts.")


class MessageHit(BaseModel):
    message: m.MessageOut
    snippet: str = Field(description="The text around the first term (plain text).")
    conversation_state: str
    visitor_id: str


class SearchResult(BaseModel):
    messages: list[MessageHit] = Field(description="Newest first.")
    contacts: list[m.VisitorOut] = Field(description="Most recently seen first.")


class ConversationFilterQuery(BaseModel):
    state: str | None = Field(
        None,
        pattern=STATES,
        description="States, comma-separated; `open` = every state but resolved.",
    )
    assignee: Id | None = Field(
        None, description="An agent id, `me` (the caller) or `none` (unassigned)."
    )
    department: Name | None = None
    tag: Name | None = Field(None, description="Conversations carrying this tag.")
    since: Time | None = Field(None, description="Created at or after this UNIX time.")
    until: Time | None = Field(None, description="Created before this UNIX time.")
    q: Query | None = Field(
        None, description="Only conversations whose messages or contact hold these words."
    )
    visitor: Id | None = Field(None, description="Only this contact's conversations.")
    limit: int = Field(50, ge=1, le=100)
    before: Time | None = Field(None, description="The previous page's `next_before`.")


class ViewFilter(m.Request):
    state: str | None = Field(None, pattern=STATES)
    assignee: Id | None = None
    department: Name | None = None
    tag: Name | None = None
    since: Time | None = None
    until: Time | None = None
    q: Annotated[str, StringConstraints(max_length=200, pattern=m.TEXT_PATTERN)] | None = None


class ViewIn(m.Request):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=m.NAME_PATTERN)]
    filter: ViewFilter = Field(default_factory=ViewFilter)
    version: Annotated[int, Field(ge=0, le=m.MAX_SEQ), BeforeValidator(m._whole_number)] | None = (
        Field(None, description="Replace only while the stored version is this (0: create).")
    )


class ViewOut(BaseModel):
    id: str
    name: str
    filter: dict[str, Any]
    created_by: str
    version: int
    updated_at: float


class ViewList(BaseModel):
    views: list[ViewOut]


# -- handlers ----------------------------------------------------------------------------------
def _searchable(call: Call) -> Any:
    storage = call.kernel.storage
    if not isinstance(storage, Searchable):
        raise ApiError(503, "not_supported", f"storage backend {storage.name!r} cannot search")
    return storage


def snippet(text: str, terms: list[str]) -> str:
    """About ``SNIPPET`` characters of ``text`` around the first term found."""
    folded = text.casefold()
    at = min((i for i in (folded.find(t) for t in terms) if i >= 0), default=0)
    start = max(0, at - SNIPPET // 3)
    piece = text[start : start + SNIPPET]
    return ("…" if start else "") + piece + ("…" if start + SNIPPET < len(text) else "")


async def search(call: Call) -> SearchResult:
    await call.require("conversation.search", call.site_id)
    storage = _searchable(call)
    query = call.query
    messages: list[Message] = await storage.search_messages(
        call.site_id, query.q, limit=query.limit
    )
    contacts = await storage.search_visitors(call.site_id, query.q, limit=query.limit)
    terms = search_terms(query.q)
    conversations: dict[str, Conversation | None] = {}
    hits = []
    for message in messages:
        if message.conversation_id not in conversations:
            conversations[message.conversation_id] = await storage.get_conversation(
                call.site_id, message.conversation_id
            )
        conversation = conversations[message.conversation_id]
        if conversation is None:
            continue
        hits.append(
            MessageHit(
                message=m.MessageOut.model_validate(message),
                snippet=snippet(message.text, terms),
                conversation_state=conversation.state,
                visitor_id=conversation.visitor_id,
            )
        )
    return SearchResult(messages=hits, contacts=[m.VisitorOut.model_validate(v) for v in contacts])


async def conversation_filter(call: Call, query: Any) -> ConversationFilter | None:
    """The storage filter of a query; None when its text matches nothing."""
    states: tuple[str, ...] = ()
    if query.state:
        wanted = set(query.state.split(","))
        if "open" in wanted:
            wanted |= set(CONVERSATION_STATES) - {"resolved"}
        states = tuple(s for s in CONVERSATION_STATES if s in wanted)
    assignee = query.assignee
    if assignee == "me":
        assignee = call.principal.id
    elif assignee == "none":
        assignee = ""
    ids = None
    if query.q:
        storage = _searchable(call)
        found = await storage.search_messages(call.site_id, query.q, limit=TEXT_MATCHES)
        contacts = await storage.search_visitors(call.site_id, query.q, limit=TEXT_MATCHES)
        ids = tuple(dict.fromkeys(msg.conversation_id for msg in found))
        by_contact = tuple(v.id for v in contacts)
        if not ids and not by_contact:
            return None
        if by_contact:  # conversations of matching contacts, added to those of the messages
            of_contacts = await storage.find_conversations(
                call.site_id, ConversationFilter(visitor_ids=by_contact), limit=TEXT_MATCHES
            )
            ids = tuple(dict.fromkeys([*ids, *(c.id for c in of_contacts)]))
    return ConversationFilter(
        states=states,
        assignee_id=assignee,
        department=query.department,
        tag=query.tag,
        since=query.since,
        until=query.until,
        ids=ids,
        visitor_ids=(visitor,) if (visitor := getattr(query, "visitor", None)) else None,
    )


async def find_conversations(call: Call) -> m.ConversationPage:
    await call.require("conversation.search", call.site_id)
    storage = _searchable(call)
    query = call.query
    where = await conversation_filter(call, query)
    if where is None:
        return m.ConversationPage(conversations=[], next_before=None)
    found = await storage.find_conversations(
        call.site_id, where, limit=query.limit + 1, before=query.before
    )
    page = found[: query.limit]
    next_before = page[-1].updated_at if len(found) > query.limit else None
    return m.ConversationPage(
        conversations=await conversations_out(call, page), next_before=next_before
    )


def _view_out(record: Any) -> ViewOut:
    data = record.data
    return ViewOut(
        id=record.id,
        name=data.get("name", record.id),
        filter=data.get("filter", {}),
        created_by=data.get("created_by", ""),
        version=record.version,
        updated_at=record.updated_at,
    )


async def list_views(call: Call) -> ViewList:
    await call.require("conversation.views", call.site_id)
    records = await call.kernel.storage.list_records(call.site_id, VIEW_KIND, limit=MAX_VIEWS)
    return ViewList(views=[_view_out(r) for r in records])


async def put_view(call: Call) -> ViewOut:
    await call.require("conversation.views", call.site_id)
    body: ViewIn = call.body
    view_id = call.params["id"]
    storage = call.kernel.storage
    current = await storage.get_record(call.site_id, VIEW_KIND, view_id)
    existing = await storage.list_records(call.site_id, VIEW_KIND, limit=MAX_VIEWS)
    if current is None and len(existing) >= MAX_VIEWS:
        raise ApiError(409, "too_many_views", f"at most {MAX_VIEWS} saved views per site")
    data = {
        "name": body.name,
        "filter": body.filter.model_dump(exclude_none=True),
        "created_by": (current.data if current else {}).get("created_by", call.principal.id),
    }
    try:
        record = await storage.put_record(
            call.site_id, VIEW_KIND, view_id, data, expect_version=body.version
        )
    except VersionConflict:
        raise ApiError(409, "version_conflict", "the view changed meanwhile: reload it") from None
    return _view_out(record)


async def delete_view(call: Call) -> None:
    await call.require("conversation.views", call.site_id)
    if not await call.kernel.storage.delete_record(call.site_id, VIEW_KIND, call.params["id"]):
        raise not_found("view")


VIEW_ID = r"^[A-Za-z0-9_-]{1,64}$"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/search",
        "search",
        "Search messages and contacts",
        "search",
        search,
        response=SearchResult,
        query=SearchQuery,
        errors=(503,),
        description="Agents only. Every word must occur in a message's text (or in a "
        "contact's name, e-mail or attributes), as a substring, in any case; Chinese needs "
        "no spaces. SQLite: FTS5 trigram index; PostgreSQL: pg_trgm index; MongoDB: a scan.",
    ),
    Endpoint(
        "GET",
        "/v1/search/conversations",
        "find_conversations",
        "Filter conversations",
        "search",
        find_conversations,
        response=m.ConversationPage,
        query=ConversationFilterQuery,
        errors=(503,),
        description="Agents only. Every filter given must hold; newest activity first. "
        "With `q`: conversations with a matching message or contact (the newest 200 matches).",
    ),
    Endpoint(
        "GET",
        "/v1/views",
        "list_views",
        "List saved views",
        "search",
        list_views,
        response=ViewList,
        description="The site's saved conversation filters, shared by its agents, in id order.",
    ),
    Endpoint(
        "PUT",
        "/v1/views/{id}",
        "put_view",
        "Create or replace a saved view",
        "search",
        put_view,
        response=ViewOut,
        body=ViewIn,
        errors=(409,),
        path_patterns={"id": VIEW_ID},
    ),
    Endpoint(
        "DELETE",
        "/v1/views/{id}",
        "delete_view",
        "Delete a saved view",
        "search",
        delete_view,
        status=204,
        errors=(404,),
        path_patterns={"id": VIEW_ID},
    ),
)

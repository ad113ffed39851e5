"""Two contacts merged into one (issue 14): ``POST /v1/visitors/{id}/merge``.

The contact of the path is **kept**; the one named in the body is **merged** into it:

- its conversations (and so their messages) move to the kept contact;
- the kept contact's profile wins: its name, e-mail, page, referrer and browser stay, and
  the merged one's fill only what it lacks; attributes are joined, the kept one's values
  winning on the same key; ``last_seen_at`` is the later one;
- the merged contact is then removed; its uploads (recorded under its id) go with an
  erasure of the kept contact from now on (an ``upload.merged`` record, :func:`note_merged`);
- ``409 both_open`` when both have a conversation that is not resolved (a visitor has at
  most one open conversation: resolve one first), also when one opens meanwhile;
- an audit record (kind ``audit.merge``: both ids, who, when, how many conversations) stays,
  and ``visitor.merged`` {visitor_id, merged_id, conversations} is emitted (the visitor
  identity plugin moves a verified user's link to the kept contact).

Not one transaction: a merge cut short (a crash, a 409 halfway) leaves some conversations
moved and both contacts present; running it again finishes it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from kefu.core.domain import ASSIGNED, BOT, QUEUED, Visitor
from kefu.core.storage import ConversationFilter, DuplicateError
from kefu.plugins.rest_api import models as m
from kefu.plugins.rest_api.contacts import VISITOR_PATH, _contact, audit
from kefu.plugins.rest_api.endpoint import ApiError, Call, Endpoint
from kefu.plugins.rest_api.search import _searchable
from kefu.plugins.rest_api.uploads import note_merged

OPEN = (BOT, QUEUED, ASSIGNED)
#: Conversations moved per read (reads repeat until none is left).
PAGE = 200
#: Rounds of "move what is left" before giving up (a contact that keeps opening chats).
ROUNDS = 50


class MergeIn(m.Request):
    merge_id: str = Field(..., pattern=m.ID_PATTERN, description="The contact merged in.")


class Merged(BaseModel):
    visitor: m.VisitorOut = Field(description="The kept contact, as it is now.")
    merged_id: str
    conversations_moved: int


def joined(kept: Visitor, merged: Visitor) -> Visitor:
    """The kept contact's profile, completed by the merged one's."""
    for name in ("name", "email", "referrer", "user_agent", "page"):
        if getattr(kept, name) is None:
            setattr(kept, name, getattr(merged, name))
    kept.attributes = {**merged.attributes, **kept.attributes}
    kept.last_seen_at = max(kept.last_seen_at, merged.last_seen_at)
    return kept


async def _has_open(storage, site_id: str, visitor_id: str) -> bool:
    where = ConversationFilter(states=OPEN, visitor_ids=(visitor_id,))
    return bool(await storage.find_conversations(site_id, where, limit=1))


BOTH_OPEN = "both contacts have a conversation that is not resolved: resolve one first"


async def merge_contacts(call: Call) -> Merged:
    kept = await _contact(call, "contact.merge")
    merged = await _contact(call, "contact.merge", call.body.merge_id)
    if kept.id == merged.id:
        raise ApiError(400, "same_contact", "a contact cannot be merged into itself")
    storage = _searchable(call)
    if await _has_open(storage, call.site_id, kept.id) and await _has_open(
        storage, call.site_id, merged.id
    ):
        raise ApiError(409, "both_open", BOTH_OPEN)
    kept = await storage.upsert_visitor(joined(kept, merged))
    moved = 0
    for _ in range(ROUNDS):
        page = await storage.find_conversations(
            call.site_id, ConversationFilter(visitor_ids=(merged.id,)), limit=PAGE
        )
        if not page:
            break
        for conversation in page:
            conversation.visitor_id = kept.id
            try:
                changed = await storage.update_conversation(
                    conversation, if_version=conversation.version
                )
            except DuplicateError:  # one of kept's opened meanwhile: this one is open too
                raise ApiError(409, "both_open", BOTH_OPEN) from None
            moved += changed  # a conversation changed meanwhile is read again next round
    else:
        raise ApiError(409, "conflict", "the merged contact keeps changing; try again")
    await note_merged(call.kernel, call.site_id, kept.id, merged.id)  # their uploads follow
    await storage.delete_visitor(call.site_id, merged.id)
    await audit(
        call,
        "audit.merge",
        {"visitor_id": kept.id, "merged_id": merged.id, "by": call.principal.id,
         "conversations": moved},
    )  # fmt: skip
    await call.kernel.emit(
        "visitor.merged", call.site_id, visitor_id=kept.id, merged_id=merged.id,
        conversations=moved,
    )  # fmt: skip
    return Merged(visitor=m.VisitorOut.model_validate(kept), merged_id=merged.id,
                  conversations_moved=moved)  # fmt: skip


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/visitors/{id}/merge",
        "merge_contacts",
        "Merge another contact into this one",
        "visitors",
        merge_contacts,
        response=Merged,
        body=MergeIn,
        errors=(404, 409, 503),
        description="Agents of the site. The other contact's conversations move here, this "
        "contact's profile wins (the other fills what it lacks, attributes are joined), the "
        "other is removed; `409 both_open` when both have an open conversation. Audited.",
        **VISITOR_PATH,
    ),
)

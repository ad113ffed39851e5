"""Contacts and data rights (issue 14): the contact list, an editable profile, a person's
data exported, a person erased, two contacts merged (:mod:`.merge`), and a message deleted
by an agent (a tombstone).

Needs a storage backend with :class:`~kefu.core.storage.Searchable` (every built-in one).
Erasures, merges and message deletions leave an audit record (who, when, how much; never
the erased content) as plugin records of kind ``audit.erasure`` / ``audit.merge`` /
``audit.message_delete``. An erasure and a message deletion delete the uploaded files the
messages carried (:func:`~kefu.plugins.rest_api.uploads.delete_attachments`) before the
rows: an erasure cut short and run again still finds them. An erasure also deletes the files
the visitor (or a contact merged into them) uploaded and never sent
(:func:`~kefu.plugins.rest_api.uploads.delete_visitor_uploads`).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from kefu.core.domain import (
    DELETED_MESSAGES,
    TOMBSTONES_KEPT,
    message_deleted_frame,
    new_id,
)
from kefu.core.storage import ConversationFilter
from kefu.plugins.rest_api import models as m
from kefu.plugins.rest_api.endpoint import ApiError, Call, Endpoint, not_found
from kefu.plugins.rest_api.search import Time, _searchable
from kefu.plugins.rest_api.uploads import delete_attachments, delete_visitor_uploads

log = logging.getLogger(__name__)

#: Most conversations and messages one export holds.
EXPORT_CONVERSATIONS = 1000
EXPORT_PAGE = 500
VISITOR_PATH = {
    "path_patterns": {"id": r"^(?!session$)[A-Za-z0-9_-]{1,64}$"},
}
Phone = Annotated[str, StringConstraints(max_length=40, pattern=r"^[0-9+() .-]*$")]


class ContactQuery(BaseModel):
    q: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=m.TEXT_PATTERN)]
        | None
    ) = Field(None, description="Only contacts whose name, e-mail or attributes hold these words.")
    limit: int = Field(50, ge=1, le=100)
    before: Time | None = Field(None, description="The previous page's `next_before`.")


class ContactPage(BaseModel):
    visitors: list[m.VisitorOut] = Field(description="Most recently seen first.")
    next_before: float | None


class ContactPatch(m.Request):
    name: Annotated[str, StringConstraints(max_length=100, pattern=m.TEXT_PATTERN)] | None = None
    email: Annotated[str, StringConstraints(max_length=254)] | None = Field(
        None, description="An e-mail address, or an empty string to remove it."
    )
    phone: Phone | None = Field(None, description="Kept as the `phone` attribute.")
    attributes: m.JsonObject | None = Field(
        None, description="Replaces the custom attributes (the `phone` one is kept unless given)."
    )


class ContactExport(BaseModel):
    visitor: m.VisitorOut
    conversations: list[dict[str, Any]] = Field(
        description="Each conversation with its `messages`, oldest first."
    )
    exported_at: float


class Erased(BaseModel):
    visitor_id: str
    messages_removed: int
    uploads_deleted: int = Field(description="Files the erased messages carried, deleted.")


async def audit(call: Call, kind: str, data: dict[str, Any]) -> None:
    """An audit record of ``kind``, its id ordered by time; ``at`` is added."""
    now = time.time()
    record_id = f"{int(now * 1000):015d}-{new_id()[:8]}"
    await call.kernel.storage.put_record(call.site_id, kind, record_id, {**data, "at": now})


async def _contact(call: Call, action: str, visitor_id: str | None = None):
    visitor = await call.kernel.storage.get_visitor(call.site_id, visitor_id or call.params["id"])
    if visitor is None:
        raise not_found("visitor")
    await call.require(action, visitor)
    return visitor


async def list_contacts(call: Call) -> ContactPage:
    await call.require("contact.list", call.site_id)
    storage, query = _searchable(call), call.query
    if query.q:
        found = await storage.search_visitors(call.site_id, query.q, limit=query.limit)
        return ContactPage(
            visitors=[m.VisitorOut.model_validate(v) for v in found], next_before=None
        )
    found = await storage.list_visitors(call.site_id, limit=query.limit + 1, before=query.before)
    page = found[: query.limit]
    next_before = page[-1].last_seen_at if len(found) > query.limit else None
    return ContactPage(
        visitors=[m.VisitorOut.model_validate(v) for v in page], next_before=next_before
    )


async def patch_contact(call: Call) -> m.VisitorOut:
    visitor = await _contact(call, "contact.update")
    body: ContactPatch = call.body
    if body.email and "@" not in body.email:
        raise ApiError(400, "invalid_field", "email: not an e-mail address")
    if body.name is not None:
        visitor.name = body.name.strip() or None
    if body.email is not None:
        visitor.email = body.email.strip() or None
    if body.attributes is not None:
        phone = visitor.attributes.get("phone")
        visitor.attributes = dict(body.attributes)
        if phone is not None and "phone" not in visitor.attributes:
            visitor.attributes["phone"] = phone
    if body.phone is not None:
        if body.phone.strip():
            visitor.attributes["phone"] = body.phone.strip()
        else:
            visitor.attributes.pop("phone", None)
    return m.VisitorOut.model_validate(await call.kernel.storage.upsert_visitor(visitor))


async def export_contact(call: Call) -> ContactExport:
    visitor = await _contact(call, "contact.export")
    storage = _searchable(call)
    conversations = await storage.find_conversations(
        call.site_id, ConversationFilter(visitor_ids=(visitor.id,)), limit=EXPORT_CONVERSATIONS
    )
    out = []
    for conversation in reversed(conversations):  # oldest first
        messages, after = [], 0
        while True:
            page = await storage.list_messages(
                call.site_id, conversation.id, after_seq=after, limit=EXPORT_PAGE
            )
            messages += [m.MessageOut.model_validate(x).model_dump() for x in page]
            if len(page) < EXPORT_PAGE:
                break
            after = page[-1].seq
        item = m.ConversationOut.model_validate(conversation).model_dump()
        item["messages"] = messages
        out.append(item)
    return ContactExport(
        visitor=m.VisitorOut.model_validate(visitor), conversations=out, exported_at=time.time()
    )


async def _attachments(call: Call, visitor_id: str) -> list[dict[str, Any]]:
    """Every attachment of every message in the visitor's conversations (whoever sent it)."""
    storage, found, before = _searchable(call), [], None
    where = ConversationFilter(visitor_ids=(visitor_id,))
    while True:
        page = await storage.find_conversations(
            call.site_id, where, limit=EXPORT_PAGE, before=before
        )
        for conversation in page:
            after = 0
            while True:
                messages = await storage.list_messages(
                    call.site_id, conversation.id, after_seq=after, limit=EXPORT_PAGE
                )
                found += [x.attachment for x in messages if x.attachment]
                if len(messages) < EXPORT_PAGE:
                    break
                after = messages[-1].seq
        if len(page) < EXPORT_PAGE:
            return found
        before = page[-1].updated_at


async def erase_contact(call: Call) -> Erased:
    visitor = await _contact(call, "contact.delete")
    files = await delete_attachments(
        call.kernel, call.site_id, await _attachments(call, visitor.id)
    )
    files += await delete_visitor_uploads(call.kernel, call.site_id, visitor.id)
    removed = await _searchable(call).delete_visitor(call.site_id, visitor.id)
    if removed < 0:
        raise not_found("visitor")
    await audit(
        call, "audit.erasure", {"visitor_id": visitor.id, "by": call.principal.id,
                                "messages": removed, "uploads": files},
    )  # fmt: skip
    return Erased(visitor_id=visitor.id, messages_removed=removed, uploads_deleted=files)


#: Who wrote a message that only ``message.delete_others`` (admins) may delete: a colleague
#: (another agent) or the server (system notices, events).
def _others(call: Call, message) -> bool:
    if message.sender_kind == "agent":
        return message.sender_id != call.principal.id
    return message.sender_kind not in ("visitor", "bot")


async def _keep_tombstone(storage, conversation_id: str, site_id: str, seq: int, entry) -> None:
    """Note the deletion in the conversation's ``meta`` (:data:`DELETED_MESSAGES`, the newest
    :data:`TOMBSTONES_KEPT`): what a ``resume`` and the inbox tell a client that held the text.
    Compare-and-set on the version, so a concurrent edit of the record is not overwritten."""
    for _ in range(8):
        fresh = await storage.get_conversation(site_id, conversation_id)
        if fresh is None:
            return
        kept = dict(fresh.meta.get(DELETED_MESSAGES) or {})
        kept[str(seq)] = entry
        if len(kept) > TOMBSTONES_KEPT:
            newest = sorted(kept, key=int)[-TOMBSTONES_KEPT:]
            kept = {k: kept[k] for k in newest}
        fresh.meta = {**fresh.meta, DELETED_MESSAGES: kept}
        if await storage.update_conversation(fresh, if_version=fresh.version):
            return
    log.warning("message %s of %s deleted; its tombstone not noted (busy)", seq, conversation_id)


async def delete_message(call: Call) -> m.MessageOut:
    """Tombstone one message: storage (text and attachment gone, ``meta.deleted``), the audit
    record, then ``message_deleted`` to everyone in the conversation (every process) and the
    ``message.deleted`` event. Who may: docs/protocol.md section 7."""
    storage = _searchable(call)
    conversation = await storage.get_conversation(call.site_id, call.params["id"])
    if conversation is None:
        raise not_found("conversation")
    await call.require("message.delete", conversation)
    seq = int(call.params["seq"])
    found = await storage.list_messages(call.site_id, conversation.id, after_seq=seq - 1, limit=1)
    if not found or found[0].seq != seq:
        raise not_found("message")
    message = found[0]
    if message.meta.get("deleted"):
        raise ApiError(409, "already_deleted", "this message was deleted already")
    if _others(call, message):
        await call.require("message.delete_others", conversation)
    now = time.time()
    by = {"kind": call.principal.kind, "id": call.principal.id}
    meta = {"deleted": {"by": call.principal.id, "at": now}}
    files = await delete_attachments(call.kernel, call.site_id, [message.attachment])
    await storage.redact_message(call.site_id, conversation.id, seq, text="", meta=meta)
    await storage.put_record(
        call.site_id,
        "audit.message_delete",
        f"{conversation.id}.{seq}",
        {
            "conversation_id": conversation.id,
            "seq": seq,
            "cid": message.cid,
            "sender_kind": message.sender_kind,
            "sender_id": message.sender_id,
            "had_attachment": message.attachment is not None,
            "uploads_deleted": files,
            "by": call.principal.id,
            "at": now,
        },
    )
    entry = {"cid": message.cid, "by": by, "at": now}
    await _keep_tombstone(storage, conversation.id, call.site_id, seq, entry)
    delivery = call.kernel.delivery
    if delivery is not None:  # clients without it see the tombstone at their next read
        delivery.forget(call.site_id, conversation.id)  # a resume reads the tombstones from it
        frame = message_deleted_frame(conversation.id, seq, entry)
        await delivery.publish_conversation(conversation, frame)
    await call.kernel.emit(
        "message.deleted", call.site_id, conversation_id=conversation.id, seq=seq,
        sender_kind=message.sender_kind, by_id=call.principal.id,
    )  # fmt: skip
    message.text, message.attachment, message.meta = "", None, meta
    return m.MessageOut.model_validate(message)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/visitors",
        "list_contacts",
        "List or search contacts",
        "visitors",
        list_contacts,
        response=ContactPage,
        query=ContactQuery,
        errors=(503,),
        description="Agents only. Most recently seen first; with `q`, the contacts whose "
        "name, e-mail or attribute values hold every word (no paging).",
    ),
    Endpoint(
        "PATCH",
        "/v1/visitors/{id}",
        "update_contact",
        "Edit a contact's profile",
        "visitors",
        patch_contact,
        response=m.VisitorOut,
        body=ContactPatch,
        errors=(404,),
        description="Agents of the site. Only the fields given change.",
        route_path="/v1/visitors/{id:(?!session$)[^{}/]+}",
        **VISITOR_PATH,
    ),
    Endpoint(
        "GET",
        "/v1/visitors/{id}/export",
        "export_contact",
        "Export a contact's data",
        "visitors",
        export_contact,
        response=ContactExport,
        errors=(404, 503),
        description="Agents of the site. The profile and every conversation with its messages "
        "(GDPR/PIPL access request).",
        **VISITOR_PATH,
    ),
    Endpoint(
        "DELETE",
        "/v1/visitors/{id}",
        "erase_contact",
        "Erase a contact",
        "visitors",
        erase_contact,
        response=Erased,
        errors=(404, 503),
        description="Admins only. The files their conversations' messages carried are deleted, "
        "then the contact, their conversations and messages are removed from storage and from "
        "search at once; an audit record (who, when, how many) stays.",
        route_path="/v1/visitors/{id:(?!session$)[^{}/]+}",
        **VISITOR_PATH,
    ),
    Endpoint(
        "DELETE",
        "/v1/conversations/{id}/messages/{seq}",
        "delete_message",
        "Delete a message",
        "conversations",
        delete_message,
        response=m.MessageOut,
        errors=(403, 404, 409, 503),
        description="Agents: their own messages and the visitor's or bot's in a conversation "
        "that is theirs or unassigned; admins: any message. The message keeps its place (seq, "
        "cid) with an empty text, no attachment and `meta.deleted` = who and when (a "
        "tombstone); its uploaded file is deleted; it leaves search; everyone in the "
        "conversation gets a `message_deleted` frame; an audit record keeps who deleted "
        "whose message when (not its text).",
        path_patterns={"seq": r"^[1-9][0-9]{0,9}$"},
    ),
)

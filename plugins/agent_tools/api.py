"""The agent tools' REST endpoints (``kefu_rest_endpoints``) and frame ops
(``kefu_transport_frame_handlers``): both call the same objects, so they refuse the
same input the same way (docs/protocol.md, docs/api.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.agent_tools import models as m

TAG = "agent tools"


def make_endpoints(tools_of: Callable[[Any], Any]) -> list[RestEndpoint]:
    """The endpoints, bound to a lookup of the kernel's :class:`~.Tools`."""

    def tools(call: Any) -> Any:
        found = tools_of(call.kernel)
        if found is None:
            raise ApiError(503, "unavailable", "the agent tools are not running (no storage)")
        return found

    async def list_notes(call: Any) -> m.NoteList:
        notes = await tools(call).annotations.notes(call.principal, call.params["id"])
        return m.NoteList(notes=notes)

    async def add_note(call: Any) -> m.NoteOut:
        note = await tools(call).annotations.add_note(
            call.principal, call.params["id"], call.body.text
        )
        return m.NoteOut(**note)

    async def tag(call: Any) -> m.TagList:
        body = call.body
        found = await tools(call).annotations.tag(
            call.principal, call.params["id"], body.add, body.remove
        )
        return m.TagList(tags=found)

    async def rate(call: Any) -> m.RatingOut:
        body = call.body
        rating = await tools(call).annotations.rate(
            call.principal, call.params["id"], body.score, body.comment
        )
        return m.RatingOut(**rating)

    async def list_canned(call: Any) -> m.CannedList:
        return m.CannedList(replies=await tools(call).canned.list(call.principal))

    async def create_canned(call: Any) -> m.CannedOut:
        body = call.body
        reply = await tools(call).canned.create(
            call.principal, body.shortcut, body.text, body.scope
        )
        return m.CannedOut(**reply)

    async def update_canned(call: Any) -> m.CannedOut:
        body = call.body
        reply = await tools(call).canned.update(
            call.principal, call.params["id"], body.shortcut, body.text
        )
        return m.CannedOut(**reply)

    async def delete_canned(call: Any) -> None:
        await tools(call).canned.delete(call.principal, call.params["id"])

    async def leave_message(call: Any) -> m.OfflineOut:
        body = call.body
        done = await tools(call).greetings.leave_message(
            call.principal,
            email=body.email,
            text=body.text,
            name=body.name,
            department=body.department,
            cid=body.cid,
        )
        return m.OfflineOut(**done)

    async def offline_messages(call: Any) -> m.OfflineList:
        found = await tools(call).greetings.offline_messages(call.principal, call.query.limit)
        return m.OfflineList(messages=found)

    async def get_welcome(call: Any) -> m.WelcomeOut:
        await call.require("conversation.list", call.site_id)
        text, source = await tools(call).greetings.welcome_text(call.site_id)
        text_zh = await tools(call).greetings.welcome_text_zh(call.site_id)
        return m.WelcomeOut(text=text, text_zh=text_zh, source=source)

    async def put_welcome(call: Any) -> m.WelcomeOut:
        greetings = tools(call).greetings
        body = call.body
        text, source = await greetings.set_welcome(call.principal, body.text, body.text_zh)
        text_zh = await greetings.welcome_text_zh(call.site_id)
        return m.WelcomeOut(text=text, text_zh=text_zh, source=source)

    notes = "/v1/conversations/{id}/notes"
    canned = "/v1/canned_replies"
    return [
        _endpoint(
            "GET",
            notes,
            "list_notes",
            "A conversation's private notes",
            list_notes,
            m.NoteList,
            description="Agents only; visitors never see notes.",
        ),
        _endpoint(
            "POST",
            notes,
            "add_note",
            "Add a private note",
            add_note,
            m.NoteOut,
            body=m.NoteBody,
            status=201,
            description="Delivered as a `note` frame to the agents watching the "
            "conversation, never to the visitor.",
        ),
        _endpoint(
            "PATCH",
            "/v1/conversations/{id}/tags",
            "tag_conversation",
            "Add and remove tags",
            tag,
            m.TagList,
            body=m.TagsBody,
            errors=(409,),
            description="Tags are lower-cased; at most 20 per conversation (`409 too_many_tags`).",
        ),
        _endpoint(
            "POST",
            "/v1/conversations/{id}/rating",
            "rate_conversation",
            "Rate a resolved conversation",
            rate,
            m.RatingOut,
            body=m.RatingBody,
            status=201,
            errors=(409,),
            description="Its visitor, once, after it was resolved (`409 not_resolved`, "
            "`409 already_rated`, `409 nothing_to_rate` when no agent answered).",
        ),
        _endpoint(
            "GET",
            canned,
            "list_canned_replies",
            "Your canned replies",
            list_canned,
            m.CannedList,
            description="The site's replies, then your own.",
        ),
        _endpoint(
            "POST",
            canned,
            "create_canned_reply",
            "Save a canned reply",
            create_canned,
            m.CannedOut,
            body=m.CannedCreate,
            status=201,
            errors=(409,),
            description="`scope: site` needs an admin. One shortcut per scope "
            "(`409 shortcut_taken`).",
        ),
        _endpoint(
            "PATCH",
            canned + "/{id}",
            "update_canned_reply",
            "Change a canned reply",
            update_canned,
            m.CannedOut,
            body=m.CannedPatch,
            errors=(409,),
        ),
        _endpoint(
            "DELETE",
            canned + "/{id}",
            "delete_canned_reply",
            "Delete a canned reply",
            delete_canned,
            None,
            status=204,
        ),
        _endpoint(
            "POST",
            "/v1/offline_messages",
            "leave_message",
            "Leave a message",
            leave_message,
            m.OfflineOut,
            body=m.OfflineBody,
            status=201,
            description="Visitors, when nobody can answer: the message waits in the "
            "visitor's conversation (a new one if needed) until an agent takes it.",
        ),
        _endpoint(
            "GET",
            "/v1/offline_messages",
            "list_offline_messages",
            "Messages left while nobody could answer",
            offline_messages,
            m.OfflineList,
            query=m.OfflineQuery,
        ),
        _endpoint(
            "GET",
            "/v1/welcome_message",
            "get_welcome_message",
            "The welcome message",
            get_welcome,
            m.WelcomeOut,
        ),
        _endpoint(
            "PUT",
            "/v1/welcome_message",
            "set_welcome_message",
            "Set the welcome message",
            put_welcome,
            m.WelcomeOut,
            body=m.WelcomeBody,
            description="Admins. Sent to every new conversation as a system message; "
            "placeholders like `{visitor.name|there}` are filled in.",
        ),
    ]


def _endpoint(
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    handler: Any,
    response: Any,
    *,
    body: Any = None,
    query: Any = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    description: str = "",
) -> RestEndpoint:
    return RestEndpoint(
        method,
        path,
        operation_id,
        summary,
        TAG,
        handler,
        response=response,
        status=status,
        query=query,
        body=body,
        errors=tuple(sorted({*errors, 404, 503})),
        description=description,
    )


def make_ops(tools_of: Callable[[], Any]) -> dict[str, Callable]:
    """Frame ops: ``note``, ``tag`` (agents), ``rate``, ``leave_message`` (visitors)."""

    def tools() -> Any:
        found = tools_of()
        if found is None:
            raise ApiError(503, "unavailable", "the agent tools are not running (no storage)")
        return found

    async def note(conn: Any, frame: dict) -> dict:
        got = m.parse(m.NoteFrame, frame)
        added = await tools().annotations.add_note(conn.principal, got.conversation_id, got.text)
        return {"op": "note_ok", "conversation_id": got.conversation_id, "note": added}

    async def tag(conn: Any, frame: dict) -> dict:
        got = m.parse(m.TagsFrame, frame)
        tags = await tools().annotations.tag(
            conn.principal, got.conversation_id, got.add, got.remove
        )
        return {"op": "tag_ok", "conversation_id": got.conversation_id, "tags": tags}

    async def rate(conn: Any, frame: dict) -> dict:
        got = m.parse(m.RatingFrame, frame)
        rating = await tools().annotations.rate(
            conn.principal, got.conversation_id, got.score, got.comment
        )
        return {"op": "rate_ok", "conversation_id": got.conversation_id, "rating": rating}

    async def leave_message(conn: Any, frame: dict) -> dict:
        got = m.parse(m.OfflineBody, frame)
        done = await tools().greetings.leave_message(conn.principal, **got.model_dump())
        return {"op": "leave_message_ok", **done}

    return {"note": note, "tag": tag, "rate": rate, "leave_message": leave_message}

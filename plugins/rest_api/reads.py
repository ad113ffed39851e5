"""Agents' read marks (issue 14): unread counts that survive a reload and reach every device.

An agent's console marks a conversation read up to a ``seq`` when it shows that message
(``PUT /v1/conversations/{id}/read``). One agent's marks are one plugin record (kind
``console.read``, id = the agent's id, data ``{conversation id: [seq, at]}``, the newest
:data:`MAX_MARKS` kept), so every storage backend keeps them. The conversation lists answer
each conversation's ``read_seq`` and ``unread`` from that record and the ``last_seq`` they
hold already: one record read per list, nothing on the path of a message.

``unread`` counts every message after the mark (the visitor's, the bot's, a colleague's,
notices) of the conversations assigned to the caller that are not resolved; elsewhere it
is 0 (queues and colleagues' chats have no badge).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from kefu.core.domain import RESOLVED, Conversation
from kefu.core.storage import VersionConflict
from kefu.plugins.rest_api import models as m
from kefu.plugins.rest_api.endpoint import ApiError, Call, Endpoint, not_found

READ_KIND = "console.read"
#: Marks kept per agent; past it the least recently written go (their conversations count
#: as never read, which only matters for a conversation assigned to the agent again).
MAX_MARKS = 1000
#: Read-modify-write rounds against concurrent marks of the same agent (two devices).
WRITE_TRIES = 5


class ReadIn(m.Request):
    seq: Annotated[int, Field(ge=0, le=m.MAX_SEQ), BeforeValidator(m._whole_number)] = Field(
        description="The latest message shown; a larger one than the conversation's "
        "`last_seq` is taken as `last_seq`."
    )


class ReadOut(BaseModel):
    conversation_id: str
    read_seq: int = Field(description="The caller's mark now (a mark never moves back).")
    unread: int = Field(description="Messages after it (`last_seq - read_seq`).")


def counts_unread(conversation: Any, agent_id: str) -> bool:
    """Whether a conversation has a badge for this agent: theirs and not resolved."""
    return conversation.assignee_id == agent_id and conversation.state != RESOLVED


async def _marks(call: Call) -> tuple[Any, dict[str, list]]:
    record = await call.kernel.storage.get_record(call.site_id, READ_KIND, call.principal.id)
    return record, dict(record.data) if record else {}


async def with_unread(call: Call, outs: list[m.ConversationOut]) -> list[m.ConversationOut]:
    """Fill ``read_seq`` and ``unread`` for an agent (visitors get neither)."""
    if call.principal.kind != "agent" or not outs:
        return outs
    _, marks = await _marks(call)
    agent_id = call.principal.id
    for out in outs:
        read_seq = min(int(marks.get(out.id, (0,))[0]), out.last_seq)
        out.read_seq = read_seq
        out.unread = out.last_seq - read_seq if counts_unread(out, agent_id) else 0
    return outs


def _pruned(marks: dict[str, list]) -> dict[str, list]:
    if len(marks) <= MAX_MARKS:
        return marks
    newest = sorted(marks.items(), key=lambda item: item[1][1], reverse=True)[:MAX_MARKS]
    return dict(newest)


async def mark_read(call: Call) -> ReadOut:
    if call.principal.kind != "agent":
        raise ApiError(403, "forbidden", "only agents keep read marks")
    storage = call.kernel.storage
    conversation: Conversation | None = await storage.get_conversation(
        call.site_id, call.params["id"]
    )
    if conversation is None:
        raise not_found("conversation")
    await call.require("conversation.read", conversation)
    seq = min(call.body.seq, conversation.last_seq)
    for _ in range(WRITE_TRIES):
        record, marks = await _marks(call)
        held = marks.get(conversation.id)
        if held and held[0] >= seq:
            seq = min(int(held[0]), conversation.last_seq)
            break
        marks[conversation.id] = [seq, time.time()]
        try:
            await storage.put_record(
                call.site_id,
                READ_KIND,
                call.principal.id,
                _pruned(marks),
                expect_version=record.version if record else 0,
            )
            break
        except VersionConflict:
            continue  # another device of the same agent wrote meanwhile: read again
    else:
        raise ApiError(409, "conflict", "the read marks kept changing; try again")
    return ReadOut(
        conversation_id=conversation.id, read_seq=seq, unread=conversation.last_seq - seq
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "PUT",
        "/v1/conversations/{id}/read",
        "mark_read",
        "Mark a conversation read",
        "conversations",
        mark_read,
        response=ReadOut,
        body=ReadIn,
        errors=(409,),
        description="Agents only: the caller has seen the conversation up to `seq`. The "
        "conversation lists answer `read_seq` and `unread` from these marks, so a reloaded "
        "console and the agent's other devices show the same unread badges.",
    ),
)

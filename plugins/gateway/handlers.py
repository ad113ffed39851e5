"""The gateway's own frame operations, contributed through ``kefu_transport_frame_handlers``.

Each handler is ``async handler(connection, frame) -> reply | None``; a
:class:`GatewayError` becomes an ``error`` frame echoing the frame's ``ref``.
Actions checked with ``kernel.hooks.permits`` are listed in docs/protocol.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from kefu.core.domain import (
    BOT,
    DELETED_MESSAGES,
    QUEUED,
    RESOLVED,
    Conversation,
    Message,
    message_deleted_frame,
    new_id,
)
from kefu.plugins.gateway.connection import Connection
from kefu.plugins.gateway.degraded import TYPING_SHED_INTERVAL
from kefu.plugins.gateway.frames import (
    GatewayError,
    bool_field,
    conversation_view,
    int_field,
    message_frame,
    string_field,
)

log = logging.getLogger(__name__)

CLIENT_MESSAGE_TYPES = ("text", "image", "file")
MAX_ATTACHMENT_BYTES = 4096
PRESENCE_STATES = ("online", "away", "offline")
TYPING_INTERVAL = 1.0  # seconds between two identical typing frames from one connection
REPLAY_PAGE = 200


def make_handlers(gateway: Any) -> dict[str, Callable]:
    """The built-in ops, bound to one gateway."""
    kernel = gateway.kernel

    async def start(conn: Connection, frame: dict) -> dict:
        p = conn.principal
        if p.kind != "visitor":
            raise GatewayError("forbidden", "only visitors start conversations; agents watch")
        department = string_field(frame, "department", required=False, max_len=64)
        if not await kernel.hooks.permits(p, "conversation.start", p.site_id):
            raise GatewayError("forbidden", "you may not start a conversation here")
        # one open conversation per visitor: the storage guarantees it across processes
        # (open_conversation); the lock saves this process's concurrent starts the attempt
        async with gateway.serialized(("start", p.site_id, p.id)):
            current = await kernel.storage.list_conversations(p.site_id, visitor_id=p.id, limit=20)
            conversation = next((c for c in current if c.state != RESOLVED), None)
            created = False
            if conversation is None:
                candidate = Conversation(
                    id=new_id(),
                    site_id=p.site_id,
                    visitor_id=p.id,
                    department=department,
                    meta={"transport": conn.transport},
                )
                if await kernel.hooks.bot_takes(candidate):  # routing waits for a handoff
                    candidate.state = BOT
                conversation, created = await kernel.storage.open_conversation(candidate)
        gateway.remember(conversation)  # the first message needs no storage read
        gateway.registry.watch(conn, conversation.id)
        view = conversation_view(conversation)
        if created:
            notice = {"op": "conversation", "event": "started", "conversation": view}
            await gateway.publish_site_agents(p.site_id, notice)
            await kernel.emit(
                "conversation.started",
                p.site_id,
                conversation_id=conversation.id,
                visitor_id=p.id,
                department=department,
                transport=conn.transport,
            )
            if conversation.state == QUEUED:  # routing picks it up from here
                await kernel.emit("conversation.queued", p.site_id, conversation_id=conversation.id)
        return {"op": "started", "conversation": view, "created": created}

    async def send(conn: Connection, frame: dict) -> None:
        p = conn.principal
        conversation_id = string_field(frame, "conversation_id", max_len=64)
        cid = string_field(frame, "cid", max_len=64)
        kind = string_field(frame, "type", required=False, max_len=16, default="text")
        if kind not in CLIENT_MESSAGE_TYPES:
            raise GatewayError("invalid_field", "type must be text, image or file", field="type")
        text = frame.get("text", "")
        limit = gateway.settings.max_text_chars
        if not isinstance(text, str) or len(text) > limit:
            raise GatewayError(
                "invalid_field", f"text must be a string of at most {limit}", field="text"
            )
        attachment = _attachment(frame.get("attachment"), required=kind != "text")
        if kind == "text" and not text.strip():
            raise GatewayError("missing_field", "a text message needs text", field="text")
        conversation = await gateway.conversation_for(conn, conversation_id, "message.send")
        if conversation.state == RESOLVED:
            raise GatewayError("conversation_resolved", "this conversation is resolved")
        message = Message(
            site_id=p.site_id,
            conversation_id=conversation_id,
            cid=cid,
            sender_kind=p.kind,
            sender_id=p.id,
            type=kind,
            text=text,
            attachment=attachment,
        )
        watch = gateway.registry.watch

        def ack(stored: Message, created: bool) -> None:
            watch(conn, conversation_id)
            if conn.seen is not None and conversation_id in conn.seen:
                conn.seen[conversation_id].add(stored.seq)  # a pending catch-up skips it
            reply = {"op": "ack", "cid": cid, "seq": stored.seq, "conversation_id": conversation_id}
            if not created:
                reply["duplicate"] = True
            if frame.get("ref") is not None:
                reply["ref"] = frame["ref"]
            gateway.send(conn, reply)

        if gateway.directory is None:  # no catch-up reads: nothing to tell them
            await gateway.deliver(conversation, message, origin=conn, ack=ack)
            return
        sending = (conversation_id, cid)
        if conn.sending is None:
            conn.sending = set()
        conn.sending.add(sending)
        try:
            await gateway.deliver(conversation, message, origin=conn, ack=ack)
        finally:
            conn.sending.discard(sending)

    async def resume(conn: Connection, frame: dict) -> dict:
        conversation_id = string_field(frame, "conversation_id", max_len=64)
        after = int_field(frame, "after_seq", required=False)
        # the cached record: a reconnect storm resumes thousands at once, and the
        # permission depends on what the cache keeps fresh (site, visitor, assignee)
        conversation = await gateway.conversation_for(conn, conversation_id, "conversation.read")
        if conn.replaying is None:
            conn.replaying = {}
        conn.replaying[conversation_id] = []  # live deliveries wait here during the replay
        gateway.registry.watch(conn, conversation_id)
        replayed, cursor, more = 0, after, False
        # messages the client holds that were deleted since (it may have been offline when
        # the frame went out): their tombstones first; the replay carries the later ones
        for key, entry in (conversation.meta.get(DELETED_MESSAGES) or {}).items():
            if int(key) <= (after or 0):
                frame = message_deleted_frame(conversation_id, int(key), entry)
                conn.push(orjson.dumps(frame))
        try:
            # a replay never overflows the outbox: a quarter stays free for live frames
            budget = min(gateway.settings.replay_max, conn.room - conn.room // 4 - 1)
            byte_floor = gateway.settings.outbox_bytes // 4
            if budget <= 0:
                more = True
            while budget > 0:
                limit = min(budget, REPLAY_PAGE)
                page = await kernel.storage.list_messages(
                    conn.principal.site_id, conversation_id, after_seq=cursor, limit=limit
                )
                for message in page:
                    data = orjson.dumps(message_frame(message))
                    if conn.room_bytes - len(data) < byte_floor:  # a quarter stays free too
                        more = True
                        break
                    conn.push(data)
                    cursor = message.seq
                    replayed += 1
                    budget -= 1
                if more or len(page) < limit:
                    break
                if budget <= 0:
                    more = True
                    break
        finally:
            waiting = conn.replaying.pop(conversation_id, [])
            if not conn.replaying:
                conn.replaying = None
        # live messages that arrived meanwhile follow the replay; ``last_seq`` stays the end
        # of the contiguous run, so a client resuming from it never skips a gap
        delivered, pushed = cursor, []
        for seq, data in sorted(waiting, key=lambda item: item[0]):
            if seq > delivered:
                conn.push(data)
                pushed.append(seq)
                delivered = seq
                if seq == cursor + 1:
                    cursor = seq
        if not more:
            gateway.catch_up(conn, conversation_id, cursor, tuple(pushed))
        return {
            "op": "resumed",
            "conversation_id": conversation_id,
            "replayed": replayed,
            "last_seq": cursor,
            "more": more,
        }

    async def watch(conn: Connection, frame: dict) -> dict:
        conversation_id = string_field(frame, "conversation_id", max_len=64)
        conversation = await gateway.conversation_for(
            conn, conversation_id, "conversation.read", fresh=True
        )
        gateway.registry.watch(conn, conversation_id)
        gateway.catch_up(conn, conversation_id, conversation.last_seq)
        return {"op": "watching", "conversation": conversation_view(conversation)}

    async def unwatch(conn: Connection, frame: dict) -> dict:
        conversation_id = string_field(frame, "conversation_id", max_len=64)
        gateway.registry.unwatch(conn, conversation_id)
        if conn.caught_up is not None:
            conn.caught_up.pop(conversation_id, None)
        return {"op": "unwatched", "conversation_id": conversation_id}

    async def typing(conn: Connection, frame: dict) -> None:
        conversation_id = string_field(frame, "conversation_id", max_len=64)
        state = bool_field(frame, "state", True)
        now = time.monotonic()
        last = conn.last_typing
        shed = gateway.degraded.typing  # under pressure: coalesced over a longer interval
        if (
            last
            and last[0] == conversation_id
            and last[1] == state
            and now - last[2] < (TYPING_SHED_INTERVAL if shed else TYPING_INTERVAL)
        ):
            if shed:
                gateway.degraded.dropped["typing"] += 1
            return None  # coalesced: the peer already knows
        conversation = await _ephemeral_target(
            gateway, conn, conversation_id, "conversation.typing"
        )
        conn.last_typing = (conversation_id, state, now)
        p = conn.principal
        notice = {
            "op": "typing",
            "conversation_id": conversation_id,
            "from": {"kind": p.kind, "id": p.id},
            "state": state,
        }
        await gateway.publish_conversation(conversation, notice, origin=conn, ephemeral=True)
        return None

    async def read(conn: Connection, frame: dict) -> None:
        conversation_id = string_field(frame, "conversation_id", max_len=64)
        seq = int_field(frame, "seq")
        conversation = await _ephemeral_target(gateway, conn, conversation_id, "conversation.read")
        if gateway.degraded.read_receipts:  # shed under pressure (degraded.py)
            gateway.degraded.dropped["read_receipts"] += 1
            return None
        p = conn.principal
        notice = {
            "op": "read",
            "conversation_id": conversation_id,
            "seq": seq,
            "by": {"kind": p.kind, "id": p.id},
        }
        await gateway.publish_conversation(conversation, notice, origin=conn, ephemeral=True)
        return None

    async def presence(conn: Connection, frame: dict) -> dict:
        p = conn.principal
        if p.kind != "agent":
            raise GatewayError("forbidden", "only agents publish presence")
        status = string_field(frame, "status", max_len=16)
        if status not in PRESENCE_STATES:
            raise GatewayError("invalid_field", "status: online, away or offline", field="status")
        extra = {}
        if "accepting" in frame:  # "accept new chats" switch (routing reads it)
            extra["accepting"] = bool_field(frame, "accepting", True)
        notice = {"op": "presence", "agent_id": p.id, "status": status, **extra}
        degraded, key = gateway.degraded, (p.site_id, p.id)
        if degraded.presence and degraded.presence_sent.get(key) == (status, extra):
            degraded.dropped["presence"] += 1  # coalesced: the site's agents know it
        else:
            degraded.presence_sent[key] = (status, extra)
            await gateway.publish_site_agents(p.site_id, notice, origin=conn, ephemeral=True)
        await kernel.emit("agent.presence", p.site_id, agent_id=p.id, status=status, **extra)
        return {"op": "presence_ok", "status": status, **extra}

    async def ping(conn: Connection, frame: dict) -> dict:
        # the interval the client pings at: stretched while ``heartbeat`` is shed
        beat = gateway.degraded.heartbeat_s(gateway.settings)
        return {"op": "pong", "ts": time.time(), "heartbeat_s": beat}

    return {
        "start": start,
        "send": send,
        "resume": resume,
        "watch": watch,
        "unwatch": unwatch,
        "typing": typing,
        "read": read,
        "presence": presence,
        "ping": ping,
    }


async def _ephemeral_target(gateway: Any, conn: Connection, conversation_id: str, action: str):
    """The conversation for typing and read receipts; the sender starts watching it."""
    conversation = await gateway.conversation_for(conn, conversation_id, action)
    gateway.registry.watch(conn, conversation_id)
    return conversation


def _attachment(value: Any, *, required: bool) -> dict[str, Any] | None:
    if value is None:
        if required:
            raise GatewayError(
                "missing_field", "image and file messages need an attachment", field="attachment"
            )
        return None
    if not isinstance(value, dict) or not isinstance(value.get("url") or value.get("id"), str):
        raise GatewayError(
            "invalid_field",
            "attachment must be an object with a url or an id",
            field="attachment",
        )
    if len(orjson.dumps(value)) > MAX_ATTACHMENT_BYTES:
        raise GatewayError("invalid_field", "attachment is too large", field="attachment")
    return value

"""Routing's frame ops, contributed to the gateway through ``kefu_transport_frame_handlers``.

Agents: ``accept``, ``decline``, ``transfer``, ``resolve``, ``reopen``, ``pick``.
Visitors: ``resolve`` (their own conversation), ``queue_status``. Each handler
parses the frame, calls :mod:`workflow` and replies with one frame; a refusal is an
``error`` frame with the :class:`~kefu.core.errors.ApiError` code (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kefu.core.errors import ApiError
from kefu.plugins.routing.notices import conversation_view, queue_frame

ID_MAX = 64
NOTE_MAX = 2000


def text(frame: dict, name: str, *, required: bool = True, max_len: int = ID_MAX) -> str | None:
    """A string field: a missing required one is ``missing_field``, a bad one ``invalid_field``."""
    value = frame.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"field {name!r} is required", field=name)
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ApiError(
            400,
            "invalid_field",
            f"field {name!r} must be a non-empty string of at most {max_len} characters",
            field=name,
        )
    return value


def make_ops(service_of: Callable[[], Any]) -> dict[str, Callable]:
    """The ops, bound to the kernel's routing service (looked up per frame: it starts later)."""

    def workflow() -> Any:
        service = service_of()
        if service is None:
            raise ApiError(503, "unavailable", "routing is not running (no storage)")
        return service.workflow

    def reply(op: str, conversation: Any) -> dict[str, Any]:
        return {"op": op, "conversation": conversation_view(conversation)}

    async def accept(conn: Any, frame: dict) -> dict:
        done = await workflow().accept(conn.principal, text(frame, "conversation_id"))
        return reply("accept_ok", done)

    async def decline(conn: Any, frame: dict) -> dict:
        reason = text(frame, "reason", required=False, max_len=NOTE_MAX)
        done = await workflow().decline(conn.principal, text(frame, "conversation_id"), reason)
        return reply("decline_ok", done)

    async def transfer(conn: Any, frame: dict) -> dict:
        done = await workflow().transfer(
            conn.principal,
            text(frame, "conversation_id"),
            agent_id=text(frame, "agent_id", required=False),
            department=text(frame, "department", required=False),
            note=text(frame, "note", required=False, max_len=NOTE_MAX),
        )
        return reply("transfer_ok", done)

    async def resolve(conn: Any, frame: dict) -> dict:
        done = await workflow().resolve(conn.principal, text(frame, "conversation_id"))
        return reply("resolve_ok", done)

    async def reopen(conn: Any, frame: dict) -> dict:
        done = await workflow().reopen(conn.principal, text(frame, "conversation_id"))
        return reply("reopen_ok", done)

    async def pick(conn: Any, frame: dict) -> dict:
        wanted = text(frame, "conversation_id", required=False)
        return reply("pick_ok", await workflow().pick(conn.principal, wanted))

    async def queue_status(conn: Any, frame: dict) -> dict:
        service = service_of()
        conversation_id = text(frame, "conversation_id")
        flow = workflow()
        conversation = await flow.load(conn.principal, conversation_id, "conversation.read")
        status = await service.queue_status(conversation)
        if status is None:
            return {
                "op": "queue",
                "conversation_id": conversation_id,
                "position": None,
                "eta_s": None,
                "available": conversation.state != "resolved",
                "reason": None,
                "state": conversation.state,
            }
        found, closed = status
        frame = queue_frame(found, closed, service.settings.eta_step_s)
        return {**frame, "state": conversation.state}

    return {
        "accept": accept,
        "decline": decline,
        "transfer": transfer,
        "resolve": resolve,
        "reopen": reopen,
        "pick": pick,
        "queue_status": queue_status,
    }

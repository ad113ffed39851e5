"""Frame building blocks: error codes, field checks, record-to-frame shapes, bus envelopes."""

from __future__ import annotations

from typing import Any

import orjson

from kefu.core.domain import Conversation, Message

PROTOCOL_VERSION = 1

#: Error codes and whether the connection survives them (docs/protocol.md lists them).
ERROR_CODES: dict[str, str] = {
    "bad_json": "the frame is not valid JSON",
    "bad_frame": "the frame is not an object with a string `op`",
    "unknown_op": "no handler for this `op`",
    "missing_field": "a required field is absent",
    "invalid_field": "a field has the wrong type or an invalid value",
    "frame_too_large": "the frame is larger than the limit",
    "rate_limited": "too many frames; this one was not processed",
    "forbidden": "the caller may not do this",
    "conversation_not_found": "no such conversation in the caller's site",
    "conversation_resolved": "the conversation is resolved; start a new one",
    "rejected": "a message processor refused the message (see `reason`)",
    "unavailable": "storage failed; nothing was stored, retry with the same `cid`",
    "internal_error": "an unexpected server error; the frame was not processed",
    # fatal: sent just before the server closes the connection
    "invalid_token": "the token is missing, forged, expired or of an unknown site",
    "flood": "the client kept flooding past the rate limit",
    "slow_consumer": "the client did not read fast enough; reconnect and resume",
    "shutdown": "the server is stopping; reconnect and resume",
}

ENVELOPE_TOPIC = "kefu.gateway"


class GatewayError(Exception):
    """Refuse a frame with an error code; the connection stays open."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


def error_frame(code: str, message: str, ref: Any = None, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    frame.update(extra)
    return frame


def string_field(
    frame: dict, name: str, *, required: bool = True, max_len: int = 256, default: Any = None
) -> Any:
    value = frame.get(name)
    if value is None:
        if required:
            raise GatewayError("missing_field", f"field {name!r} is required", field=name)
        return default
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise GatewayError(
            "invalid_field",
            f"field {name!r} must be a non-empty string of at most {max_len} characters",
            field=name,
        )
    return value


def int_field(frame: dict, name: str, *, required: bool = True, default: int = 0) -> int:
    value = frame.get(name)
    if value is None:
        if required:
            raise GatewayError("missing_field", f"field {name!r} is required", field=name)
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**53:
        raise GatewayError(
            "invalid_field", f"field {name!r} must be a non-negative integer", field=name
        )
    return value


def bool_field(frame: dict, name: str, default: bool) -> bool:
    value = frame.get(name, default)
    if not isinstance(value, bool):
        raise GatewayError("invalid_field", f"field {name!r} must be true or false", field=name)
    return value


def conversation_view(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "site_id": c.site_id,
        "visitor_id": c.visitor_id,
        "state": c.state,
        "assignee_id": c.assignee_id,
        "department": c.department,
        "last_seq": c.last_seq,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def message_frame(m: Message) -> dict[str, Any]:
    return {
        "op": "message",
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "cid": m.cid,
        "sender": {"kind": m.sender_kind, "id": m.sender_id},
        "type": m.type,
        "text": m.text,
        "attachment": m.attachment,
        "meta": m.meta,
        "created_at": m.created_at,
    }


# -- bus envelopes ------------------------------------------------------------------
# One bus payload = a small JSON header, a newline, then the frame exactly as clients
# receive it: each process fans it out without serialising it again.


def envelope(frame: bytes, **header: Any) -> bytes:
    return orjson.dumps(header) + b"\n" + frame


def open_envelope(payload: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, frame = payload.partition(b"\n")
    return orjson.loads(head), frame

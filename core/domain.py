"""Domain records shared by storage backends, the gateway and every feature.

Every record carries ``site_id`` (the tenant); no storage query crosses sites.
Times are UNIX seconds (float). Ids are opaque strings (:func:`new_id`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

# Conversation states
BOT, QUEUED, ASSIGNED, RESOLVED = "bot", "queued", "assigned", "resolved"
CONVERSATION_STATES = (BOT, QUEUED, ASSIGNED, RESOLVED)

# Message sender kinds and types
SENDER_KINDS = ("visitor", "agent", "bot", "system")
MESSAGE_TYPES = ("text", "image", "file", "event")


#: ``Conversation.meta`` key of the messages deleted in it (tombstones):
#: ``{"<seq>": {"cid": ..., "by": {"kind", "id"}, "at": ...}}``, the newest
#: :data:`TOMBSTONES_KEPT`. A ``resume`` sends ``message_deleted`` for those at or before its
#: ``after_seq`` (a client offline when one was deleted still holds the text), and the
#: conversation list carries them to consoles (the inbox's previews).
DELETED_MESSAGES = "deleted_messages"
TOMBSTONES_KEPT = 200


def message_deleted_frame(conversation_id: str, seq: int, entry: dict[str, Any]) -> dict[str, Any]:
    """The ``message_deleted`` frame of one tombstone (an entry of :data:`DELETED_MESSAGES`)."""
    return {
        "op": "message_deleted",
        "conversation_id": conversation_id,
        "seq": seq,
        "cid": entry.get("cid"),
        "deleted_by": entry.get("by"),
        "at": entry.get("at"),
    }


def new_id() -> str:
    """A 22-character random id, URL-safe."""
    return secrets.token_urlsafe(16)


def now() -> float:
    return time.time()


@dataclass(slots=True)
class Site:
    id: str
    name: str
    widget_key: str
    created_at: float = field(default_factory=now)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Agent:
    id: str
    site_id: str
    email: str
    name: str
    password_hash: str
    roles: list[str] = field(default_factory=lambda: ["agent"])
    capacity: int = 5
    skills: list[str] = field(default_factory=list)
    status: str = "offline"  # online | away | offline
    created_at: float = field(default_factory=now)


@dataclass(slots=True)
class Visitor:
    id: str
    site_id: str
    name: str | None = None
    email: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    page: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=now)
    last_seen_at: float = field(default_factory=now)


@dataclass(slots=True)
class Conversation:
    id: str
    site_id: str
    visitor_id: str
    state: str = QUEUED
    assignee_id: str | None = None
    department: str | None = None
    priority: int = 0
    last_seq: int = 0
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    resolved_at: float | None = None
    #: grows by one with every update_conversation (optimistic concurrency: ``if_version``);
    #: not compared by ``==`` (two copies of the same content are equal records)
    version: int = field(default=0, compare=False)


@dataclass(slots=True)
class Message:
    """A message. ``seq`` is 0 until stored; then it increases by one per conversation."""

    site_id: str
    conversation_id: str
    cid: str
    sender_kind: str
    sender_id: str
    type: str = "text"
    text: str = ""
    attachment: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    created_at: float = field(default_factory=now)

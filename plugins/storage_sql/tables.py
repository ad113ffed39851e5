"""The SQL schema (SQLAlchemy Core, which sqlmodel builds on) and record <-> row mapping.

Core tables rather than ORM models because the hot path is a bulk INSERT and a
bulk UPDATE per group commit. JSON fields are kept as text encoded with orjson,
the same on SQLite and PostgreSQL, and encoded before a write reaches the
batch, so one record that cannot be encoded fails alone. Every primary key
starts with ``site_id``: a lookup without the tenant cannot use an index, and
reading the code, cannot happen by accident.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor
from kefu.core.storage import StorageError, email_key

R = TypeVar("R")

metadata = MetaData()

ID = 64  # ids are 22 characters; room for ids a migration brings in


def _id(name: str, **kw: Any) -> Column:
    return Column(name, String(ID), **kw)


sites = Table(
    "sites",
    metadata,
    _id("id", primary_key=True),
    Column("name", Text, nullable=False),
    Column("widget_key", String(128), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("settings", Text, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    _id("site_id", primary_key=True),
    _id("id", primary_key=True),
    Column("email", Text, nullable=False),
    Column("email_key", String(320), nullable=False),
    Column("name", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("skills", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("site_id", "email_key", name="agents_site_email"),
)

visitors = Table(
    "visitors",
    metadata,
    _id("site_id", primary_key=True),
    _id("id", primary_key=True),
    Column("name", Text),
    Column("email", Text),
    Column("referrer", Text),
    Column("user_agent", Text),
    Column("page", Text),
    Column("attributes", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
)

conversations = Table(
    "conversations",
    metadata,
    _id("site_id", primary_key=True),
    _id("id", primary_key=True),
    _id("visitor_id", nullable=False),
    Column("state", String(16), nullable=False),
    _id("assignee_id"),
    Column("department", Text),
    Column("priority", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("tags", Text, nullable=False),
    Column("meta", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("resolved_at", Double),
    Index("conversations_site_updated", "site_id", "updated_at"),
    Index("conversations_site_state", "site_id", "state", "updated_at"),
    Index("conversations_site_assignee", "site_id", "assignee_id", "updated_at"),
    Index("conversations_site_visitor", "site_id", "visitor_id", "updated_at"),
)

# The primary key is the unique (site_id, conversation_id, seq) index; the
# unique cid index is what makes a re-sent message impossible to store twice.
messages = Table(
    "messages",
    metadata,
    _id("site_id", primary_key=True),
    _id("conversation_id", primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("cid", String(128), nullable=False),
    Column("sender_kind", String(16), nullable=False),
    _id("sender_id", nullable=False),
    Column("type", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("attachment", Text),
    Column("meta", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("site_id", "conversation_id", "cid", name="messages_site_conv_cid"),
)

#: The fields of each record kept as JSON text.
JSON_FIELDS: dict[type, frozenset[str]] = {
    Site: frozenset({"settings"}),
    Agent: frozenset({"roles", "skills"}),
    Visitor: frozenset({"attributes"}),
    Conversation: frozenset({"tags", "meta"}),
    Message: frozenset({"attachment", "meta"}),
}


def to_row(record: Any) -> dict[str, Any]:
    """A record as column values; raises :class:`StorageError` when a field is not JSON."""
    json_fields = JSON_FIELDS[type(record)]
    row: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name in json_fields and value is not None:
            try:
                value = orjson.dumps(value).decode()
            except TypeError as exc:
                raise StorageError(f"{type(record).__name__}.{f.name}: {exc}") from None
        row[f.name] = value
    if isinstance(record, Agent):
        row["email_key"] = email_key(record.email)
    return row


def from_row(cls: type[R], row: Any) -> R:
    """Build a record from a result row (anything with ``_mapping`` or a mapping)."""
    mapping = getattr(row, "_mapping", row)
    json_fields = JSON_FIELDS[cls]
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = mapping[f.name]
        if f.name in json_fields and value is not None:
            value = orjson.loads(value)
        values[f.name] = value
    return cls(**values)

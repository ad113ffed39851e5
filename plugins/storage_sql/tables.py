"""The SQL schema (SQLAlchemy Core, which sqlmodel builds on) and record <-> row codecs.

Core tables rather than ORM models: the DDL is compiled from them at start-up
(``statements.py``) and the statements kefu runs are plain SQL text built once
from the same column lists, executed by the driver itself (``sqlite3``,
``asyncpg``). JSON fields are kept as text encoded with orjson, the same on
SQLite and PostgreSQL, and encoded before a write reaches the batch, so one
record that cannot be encoded fails alone. Every primary key starts with
``site_id``: a lookup without the tenant cannot use an index, and reading the
code, cannot happen by accident.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
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
    # added after the first schema: existing databases get it from MIGRATIONS (statements.py)
    Column("version", Integer, nullable=False, server_default="0"),
    # updated_at's minute (activity_minute): what the listing indexes hold instead of
    # updated_at, so that an append moves no index entry unless its minute changes
    Column("active_at", Double, nullable=False, server_default="0"),
    Index("conversations_site_active", "site_id", "active_at"),
    Index("conversations_site_state_active", "site_id", "state", "active_at"),
    Index("conversations_site_assignee_active", "site_id", "assignee_id", "active_at"),
    Index("conversations_site_visitor_active", "site_id", "visitor_id", "active_at"),
    # reports read a site's conversations by creation time, then id (core.reports)
    Index("conversations_site_created_id", "site_id", "created_at", "id"),
    # at most one open conversation per visitor, across processes (see GUARANTEES)
    Index(
        "conversations_one_open",
        "site_id",
        "visitor_id",
        unique=True,
        sqlite_where=text("state <> 'resolved'"),
        postgresql_where=text("state <> 'resolved'"),
    ),
)

#: Columns added to a table after databases were created without them: (table, column).
MIGRATIONS = [("conversations", "version"), ("conversations", "active_at"), ("blobs", "owner")]
#: Run once, right after the column was added: fill it in for the rows already there.
BACKFILLS = {
    ("conversations", "active_at"): "UPDATE {table} SET active_at = {minute} WHERE active_at = 0"
}
#: Indexes of older kefu versions, dropped at open.
RETIRED_INDEXES = {
    "conversations": (
        "conversations_site_updated",
        "conversations_site_state",
        "conversations_site_assignee",
        "conversations_site_visitor",
    )
}

#: Seconds per step of ``active_at``.
ACTIVITY_STEP = 60


def activity_minute(updated_at: float) -> float:
    """``active_at`` for ``updated_at``: the start of its minute.

    The same arithmetic as the SQL of :data:`BACKFILLS` (an IEEE division, then
    truncation), so a row filled in by SQL and one written from Python agree, and
    monotone: ``a <= b`` gives ``activity_minute(a) <= activity_minute(b)``. Listing
    pages ``ORDER BY active_at DESC, updated_at DESC``; ``updated_at < before`` is
    ``active_at <= activity_minute(before) AND updated_at < before``. At 60 s, a
    conversation that gets a message every few seconds moves its four index entries
    once a minute instead of at every append (on PostgreSQL the row update is then a
    HOT update, which writes no index at all).
    """
    return float(int(updated_at / ACTIVITY_STEP) * ACTIVITY_STEP)


#: Unique indexes that data written by an older kefu may violate: created when it can be,
#: else logged (the guarantee holds once the offending rows are fixed).
GUARANTEES = {"conversations_one_open"}

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

# Plugins' documents (core.storage.Record): a kind per plugin, a version per write.
# ``id`` is compared in code-point order on every backend ("C" collation on PostgreSQL,
# set in statements.py; SQLite's default BINARY already is).
records = Table(
    "records",
    metadata,
    _id("site_id", primary_key=True),
    Column("kind", String(128), primary_key=True),
    Column("id", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# File contents (core.storage.BlobStore): BLOB on SQLite, bytea on PostgreSQL, written once.
blobs = Table(
    "blobs",
    metadata,
    _id("site_id", primary_key=True),
    Column("id", String(255), primary_key=True),
    Column("mime", String(128), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("data", LargeBinary, nullable=False),
    # who uploaded it ("visitor:<id>", "agent:<id>"): added after the first schema (MIGRATIONS)
    Column("owner", String(255), nullable=False, server_default=""),
    Index("blobs_site_owner", "site_id", "owner"),
)

#: The fields of each record kept as JSON text.
JSON_FIELDS: dict[type, frozenset[str]] = {
    Site: frozenset({"settings"}),
    Agent: frozenset({"roles", "skills"}),
    Visitor: frozenset({"attributes"}),
    Conversation: frozenset({"tags", "meta"}),
    Message: frozenset({"attachment", "meta"}),
}


class Codec(Generic[R]):
    """One record class <-> rows of its table, as tuples of column values.

    ``columns`` are the record's fields in declaration order (the order of
    ``cls(*values)``), followed by ``extra`` columns computed from the record
    (an agent's ``email_key``). A statement that reads a record selects
    ``fields`` in that order, so a driver row decodes positionally, without
    a mapping per row.
    """

    def __init__(self, cls: type[R], extra: dict[str, Any] | None = None) -> None:
        self.cls = cls
        self.fields: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        self._extra = tuple((extra or {}).values())
        self.columns: tuple[str, ...] = self.fields + tuple(extra or {})
        json = JSON_FIELDS[cls]
        self._json = tuple((i, n) for i, n in enumerate(self.fields) if n in json)
        self._get = operator.attrgetter(*self.fields)

    def encode(self, record: R) -> list[Any]:
        """The record as ``columns`` values; :class:`StorageError` when a field is not JSON."""
        values = list(self._get(record))
        for i, name in self._json:
            value = values[i]
            if value is not None:
                try:
                    values[i] = orjson.dumps(value).decode()
                except TypeError as exc:
                    raise StorageError(f"{self.cls.__name__}.{name}: {exc}") from None
        for compute in self._extra:
            values.append(compute(record))
        return values

    def decode(self, row: Sequence[Any]) -> R:
        """A record from a row of ``fields`` (a tuple, an asyncpg Record)."""
        values = list(row)
        for i, _ in self._json:
            value = values[i]
            if value is not None:
                values[i] = orjson.loads(value)
        return self.cls(*values)


SITE = Codec(Site)
AGENT = Codec(Agent, {"email_key": lambda agent: email_key(agent.email)})
VISITOR = Codec(Visitor)
CONVERSATION = Codec(Conversation, {"active_at": lambda c: activity_minute(c.updated_at)})
MESSAGE = Codec(Message)

#: Record class -> (its table, its codec)
TABLES: dict[type, tuple[Table, Codec]] = {
    Site: (sites, SITE),
    Agent: (agents, AGENT),
    Visitor: (visitors, VISITOR),
    Conversation: (conversations, CONVERSATION),
    Message: (messages, MESSAGE),
}

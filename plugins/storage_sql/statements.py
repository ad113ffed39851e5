"""The SQL kefu runs, as text built once per database from the tables in ``tables.py``.

Every statement is a constant string (one per shape: the optional filters of
``list_conversations`` or of the compare-and-set give a handful of shapes,
each built on first use and kept), so the driver's own statement cache
(``sqlite3``'s per connection, ``asyncpg``'s prepared statements per
connection) parses and plans each once. Statements are written with ``?``
placeholders; on PostgreSQL they become ``$1``, ``$2`` ... Identifiers are
quoted by SQLAlchemy's preparer for the dialect, as the DDL is.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

from sqlalchemy import MetaData, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor

from .tables import (
    ACTIVITY_STEP,
    BACKFILLS,
    GUARANTEES,
    MIGRATIONS,
    RETIRED_INDEXES,
    TABLES,
    conversations,
    messages,
    metadata,
    records,
    visitors,
)

#: A batch's key lists are padded to one of these sizes on SQLite (a statement per size).
_BUCKETS = tuple(2**i for i in range(15))
_PLACEHOLDER = re.compile(r"\?")


#: How conversation listings are ordered: by ``updated_at``, through its minute (see
#: ``tables.activity_minute``), which the listing indexes hold.
LISTING_ORDER = "active_at DESC, updated_at DESC, id DESC"


def bucket(n: int) -> int:
    """The smallest padded size that holds ``n`` keys."""
    for size in _BUCKETS:
        if size >= n:
            return size
    return n


class Statements:
    """The statements for one database: SQLite, or PostgreSQL in ``schema``."""

    def __init__(self, *, postgres: bool, schema: str | None = None) -> None:
        self.postgres = postgres
        self.dialect = postgresql.dialect() if postgres else sqlite.dialect()
        self._quote = self.dialect.identifier_preparer.quote
        shadow = MetaData()
        self._tables: dict[str, Table] = {
            t.name: t.to_metadata(shadow, schema=schema) for t in metadata.sorted_tables
        }
        if postgres:  # ids of records in code-point order, as on SQLite and MongoDB
            self._tables[records.name].c.id.type = String(records.c.id.type.length, collation="C")
        self.schema = schema
        self._shapes: dict[tuple, str] = {}
        fields = {cls: TABLES[cls][1].fields for cls in TABLES}

        def keys(cls: type) -> list[str]:
            return [c.name for c in TABLES[cls][0].primary_key.columns]

        # -- simple reads and writes ---------------------------------------------------------
        self.insert = {cls: self._insert(cls) for cls in TABLES}
        self.by_key = {cls: self.select(cls, keys(cls)) for cls in TABLES if cls is not Message}
        self.site_by_widget_key = self.select(Site, ["widget_key"])
        self.sites = self.select(Site, [], order="created_at, id")
        self.update_site = self.update(Site, ["id"])
        self.agent_by_email = self.select(Agent, ["site_id", "email_key"])
        self.agents = self.select(Agent, ["site_id"], order="created_at, id")
        self.update_agent = self.update(Agent, ["site_id", "id"])
        self.messages_after = self.select(
            Message,
            ["site_id", "conversation_id"],
            extra="seq > ?",
            order="seq",
            limit=True,
        )
        self.messages_before = self.select(
            Message,
            ["site_id", "conversation_id"],
            extra="seq < ?",
            order="seq DESC",
            limit=True,
        )
        # -- visitors: insert or overwrite all but created_at, return what is stored ----------
        kept = {"site_id", "id", "created_at"}
        changed = ", ".join(
            f"{self._quote(c)} = excluded.{self._quote(c)}"
            for c in fields[Visitor]
            if c not in kept
        )
        self.upsert_visitor = self.text(
            f"{self.insert[Visitor]} ON CONFLICT ({self.cols(['site_id', 'id'])}) "
            f"DO UPDATE SET {changed} RETURNING {self.cols(fields[Visitor])}"
        )
        # -- appends (see appends.py) ----------------------------------------------------------
        m, c = self.table(messages), self.table(conversations)
        self.message_columns = [f for f in fields[Message] if f != "seq"] + ["seq"]
        if postgres:
            # the batch's conversation rows, locked in key order (no deadlock between processes)
            self.append_heads = self.text(
                f"SELECT site_id, id, last_seq, updated_at FROM {c} WHERE (site_id, id) IN "
                f"(SELECT * FROM unnest({self._arrays(conversations, ['site_id', 'id'])})) "
                "ORDER BY site_id, id FOR UPDATE"
            )
            triple = ["site_id", "conversation_id", "cid"]
            self.append_found = self.text(
                f"SELECT {self.cols(fields[Message])} FROM {m} WHERE "
                f"({self.cols(triple)}) IN (SELECT * FROM unnest({self._arrays(messages, triple)}))"
            )
            # the new messages and the conversations' new last_seq, in one statement (one
            # round trip; the two tables are distinct, so one snapshot serves both)
            bump = ["last_seq", "updated_at", "active_at", "site_id", "id"]
            self.append_store = self.text(
                f"WITH stored AS (INSERT INTO {m} ({self.cols(self.message_columns)}) "
                f"SELECT * FROM unnest({self._arrays(messages, self.message_columns)})) "
                f"UPDATE {c} AS c SET last_seq = u.last_seq, updated_at = u.updated_at, "
                "active_at = u.active_at "
                f"FROM unnest({self._arrays(conversations, bump)}) AS u({', '.join(bump)}) "
                "WHERE c.site_id = u.site_id AND c.id = u.id"
            )
            # a batch of visitor upserts as one statement (keys unique within it)
            self.upsert_visitors = self.text(
                f"INSERT INTO {self.table(visitors)} ({self.cols(fields[Visitor])}) "
                f"SELECT * FROM unnest({self._arrays(visitors, fields[Visitor])}) "
                f"ON CONFLICT (site_id, id) DO UPDATE SET {changed} "
                "RETURNING site_id, id, created_at"
            )

        # -- plugin records (core.storage.Record) ----------------------------------------------
        r = self.table(records)
        key = "site_id = ? AND kind = ? AND id = ?"
        values = "(site_id, kind, id, version, data, updated_at) VALUES (?, ?, ?, 1, ?, ?)"
        self.record = self.text(f"SELECT version, data, updated_at FROM {r} WHERE {key}")
        self.record_create = self.text(
            f"INSERT INTO {r} {values} ON CONFLICT (site_id, kind, id) DO NOTHING "
            "RETURNING version, updated_at"
        )
        self.record_put = self.text(
            f"INSERT INTO {r} AS r {values} ON CONFLICT (site_id, kind, id) DO UPDATE SET "
            "version = r.version + 1, data = excluded.data, updated_at = excluded.updated_at "
            "RETURNING version, updated_at"
        )
        self.record_replace = self.text(
            f"UPDATE {r} SET version = version + 1, data = ?, updated_at = ? "
            f"WHERE {key} AND version = ? RETURNING version, updated_at"
        )
        self.record_delete = self.text(f"DELETE FROM {r} WHERE {key}")
        self.record_delete_if = self.text(f"DELETE FROM {r} WHERE {key} AND version = ?")
        self.records = self.text(
            f"SELECT id, version, data, updated_at FROM {r} WHERE site_id = ? AND kind = ? "
            "AND id > ? AND id >= ? AND substr(id, 1, ?) = ? ORDER BY id LIMIT ?"
        )

    # -- building blocks ---------------------------------------------------------------------
    def table(self, table: Table) -> str:
        return self.dialect.identifier_preparer.format_table(self._tables[table.name])

    def cols(self, names: Sequence[str], prefix: str = "") -> str:
        return ", ".join(prefix + self._quote(n) for n in names)

    def text(self, sql: str) -> str:
        """``?`` placeholders as the driver wants them."""
        if not self.postgres:
            return sql
        counter = itertools.count(1)
        return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)

    def _insert(self, cls: type, columns: Sequence[str] | None = None) -> str:
        table, codec = TABLES[cls]
        columns = list(columns or codec.columns)
        marks = ", ".join("?" * len(columns))
        return self.text(f"INSERT INTO {self.table(table)} ({self.cols(columns)}) VALUES ({marks})")

    def select(
        self,
        cls: type,
        where: Sequence[str],
        *,
        extra: str = "",
        order: str = "",
        limit: bool = False,
    ) -> str:
        """``SELECT <fields> FROM <table> WHERE a = ? AND ... [AND extra] [ORDER BY] [LIMIT ?]``."""
        table, codec = TABLES[cls]
        clauses = [f"{self._quote(n)} = ?" for n in where] + ([extra] if extra else [])
        sql = f"SELECT {self.cols(codec.fields)} FROM {self.table(table)}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        if order:
            sql += f" ORDER BY {order}"
        if limit:
            sql += " LIMIT ?"
        return self.text(sql)

    def update(
        self,
        cls: type,
        where: Sequence[str],
        *,
        only: Sequence[str] | None = None,
        skip: Sequence[str] = (),
        extra: Sequence[str] = (),
        bump: Sequence[str] = (),
    ) -> str:
        """``UPDATE <table> SET <columns but the keys> = ?[, <bump> = <bump> + 1] WHERE
        <keys> = ? [AND extra]``."""
        table = TABLES[cls][0]
        columns = only if only is not None else self.set_columns(cls, where, skip)
        sets = ", ".join(
            [f"{self._quote(n)} = ?" for n in columns]
            + [f"{self._quote(n)} = {self._quote(n)} + 1" for n in bump]
        )
        clauses = [f"{self._quote(n)} = ?" for n in where] + list(extra)
        return self.text(f"UPDATE {self.table(table)} SET {sets} WHERE {' AND '.join(clauses)}")

    @staticmethod
    def set_columns(cls: type, where: Sequence[str], skip: Sequence[str] = ()) -> list[str]:
        """The columns an :meth:`update` of ``cls`` sets, in parameter order."""
        return [n for n in TABLES[cls][1].columns if n not in where and n not in skip]

    def _arrays(self, table: Table, names: Sequence[str]) -> str:
        """``?::TYPE[], ...``: one array parameter per column (PostgreSQL's ``unnest``).

        Strings travel as ``text[]``, never ``varchar(n)[]``: an explicit cast to
        ``varchar(n)`` truncates silently, where storing into the column refuses
        a value that is too long, as a single-row INSERT does.
        """
        types = [table.c[n].type for n in names]
        return ", ".join(
            "?::text[]" if isinstance(t, String) else f"?::{t.compile(dialect=self.dialect)}[]"
            for t in types
        )

    # -- statements with a shape per call -----------------------------------------------------
    def _shaped(self, key: tuple, build: Callable[[], str]) -> str:
        sql = self._shapes.get(key)
        if sql is None:
            sql = self._shapes[key] = build()
        return sql

    def conversations(self, state: bool, assignee: bool, visitor: bool, before: bool) -> str:
        return self._shaped(
            ("conversations", state, assignee, visitor, before),
            lambda: self._conversations(state, assignee, visitor, before),
        )

    def _conversations(self, state: bool, assignee: bool, visitor: bool, before: bool) -> str:
        where = ["site_id"] + [
            name
            for name, wanted in (
                ("state", state),
                ("assignee_id", assignee),
                ("visitor_id", visitor),
            )
            if wanted
        ]
        return self.select(
            Conversation,
            where,
            extra="active_at <= ? AND updated_at < ?" if before else "",
            order=LISTING_ORDER,
            limit=True,
        )

    def update_conversation(self, if_state: bool, if_assignee: str, if_version: bool) -> str:
        """``if_assignee``: "" (not compared), "null" (only while unassigned) or "eq"."""
        key = ("update_conversation", if_state, if_assignee, if_version)
        return self._shaped(
            key, lambda: self._update_conversation(if_state, if_assignee, if_version)
        )

    def _update_conversation(self, if_state: bool, if_assignee: str, if_version: bool) -> str:
        extra = ["state = ?"] if if_state else []
        if if_assignee == "null":
            extra.append("assignee_id IS NULL")
        elif if_assignee == "eq":
            extra.append("assignee_id = ?")
        if if_version:
            extra.append("version = ?")
        return self.update(
            Conversation,
            ["site_id", "id"],
            skip=["last_seq", "version"],
            extra=extra,
            bump=["version"],
        )

    def open_conversation_of(self) -> str:
        """The visitor's conversation that is not resolved (at most one)."""
        return self._shaped(
            ("open_conversation",),
            lambda: self.select(
                Conversation, ["site_id", "visitor_id"], extra="state <> 'resolved'", limit=True
            ),
        )

    def append_heads_json(self, n: int) -> str:
        """SQLite: ``last_seq`` / ``updated_at`` of ``n`` (padded) conversation keys as one
        row, one JSON array of ``[site_id, id, last_seq, "updated_at"]`` (the float
        printed with 17 digits, so it reads back exactly). One row is one step of the
        statement: Python's ``sqlite3`` lets go of the GIL around every step, and getting
        it back while the event loop runs costs the writer up to a switch interval (5 ms)
        each time."""
        return self._shaped(("heads_json", n), lambda: self._append_heads_json(n))

    def _append_heads_json(self, n: int) -> str:
        keys = ", ".join(["(?, ?)"] * n)
        return (
            "SELECT json_group_array(json_array(c.site_id, c.id, c.last_seq, "
            "printf('%!.17g', c.updated_at))) "
            f"FROM (VALUES {keys}) AS k CROSS JOIN {self.table(conversations)} AS c "
            "ON c.site_id = k.column1 AND c.id = k.column2"
        )

    def append_insert_rows(self, n: int) -> str:
        """SQLite: one ``INSERT`` of ``n`` messages (one step, where ``executemany`` takes
        one per row; see :meth:`append_heads_json` for why steps count)."""
        return self._shaped(("insert_rows", n), lambda: self._append_insert_rows(n))

    def _append_insert_rows(self, n: int) -> str:
        row = "(" + ", ".join("?" * len(self.message_columns)) + ")"
        return (
            f"INSERT INTO {self.table(messages)} ({self.cols(self.message_columns)}) "
            f"VALUES {', '.join([row] * n)}"
        )

    def append_bump_rows(self, n: int, minute: bool) -> str:
        """SQLite: one ``UPDATE ... FROM (VALUES ...)`` of ``n`` conversations' ``last_seq``
        and ``updated_at``, rows ``(site_id, id, last_seq, updated_at[, active_at])``. Two
        shapes: SQLite maintains an index when the statement sets one of its columns,
        whatever the value, so ``active_at`` is set only where its minute moved."""
        return self._shaped(("bump_rows", n, minute), lambda: self._append_bump_rows(n, minute))

    def _append_bump_rows(self, n: int, minute: bool) -> str:
        width = 5 if minute else 4
        row = "(" + ", ".join("?" * width) + ")"
        sets = "last_seq = v.column3, updated_at = v.column4"
        if minute:
            sets += ", active_at = v.column5"
        return (
            f"UPDATE {self.table(conversations)} AS c SET {sets} "
            f"FROM (VALUES {', '.join([row] * n)}) AS v "
            "WHERE c.site_id = v.column1 AND c.id = v.column2"
        )

    def append_found(self, n: int) -> str:
        """SQLite: the messages stored under ``n`` (padded) ``(site, conversation, cid)``."""
        return self._shaped(("found", n), lambda: self._append_found(n))

    def _append_found(self, n: int) -> str:
        keys = ", ".join(["(?, ?, ?)"] * n)
        return (
            f"SELECT {self.cols(TABLES[Message][1].fields, 'm.')} FROM (VALUES {keys}) AS k "
            f"CROSS JOIN {self.table(messages)} AS m ON m.site_id = k.column1 "
            "AND m.conversation_id = k.column2 AND m.cid = k.column3"
        )

    # -- schema ------------------------------------------------------------------------------
    def ddl(self) -> list[tuple[str, str]]:
        """``(statement, kind)`` to run at open, in order: ``CREATE ... IF NOT EXISTS`` for
        every table, the columns of :data:`MIGRATIONS` (kind ``"column"``: a "duplicate
        column" error means it is there; each may be followed by its :data:`BACKFILLS`
        statement, kind ``"backfill"``, run only when the column was just added), the
        :data:`RETIRED_INDEXES` dropped,
        then every index (kind ``"guarantee"`` for :data:`GUARANTEES`: data an older kefu
        wrote may violate it; the driver logs instead of refusing to open)."""
        out: list[tuple[str, str]] = []
        if self.postgres and self.schema:
            out.append((f"CREATE SCHEMA IF NOT EXISTS {self._quote(self.schema)}", ""))
        tables = [self._tables[t.name] for t in metadata.sorted_tables]
        for table in tables:
            out.append(
                (str(CreateTable(table, if_not_exists=True).compile(dialect=self.dialect)), "")
            )
        for table_name, column in MIGRATIONS:
            table = self._tables[table_name]
            spec = str(CreateColumn(table.c[column]).compile(dialect=self.dialect))
            out.append((f"ALTER TABLE {self.table(table)} ADD COLUMN {spec}", "column"))
            backfill = BACKFILLS.get((table_name, column))
            if backfill:
                minute = (
                    f"trunc(updated_at / {ACTIVITY_STEP}) * {ACTIVITY_STEP}"
                    if self.postgres
                    else f"CAST(updated_at / {ACTIVITY_STEP} AS INTEGER) * {ACTIVITY_STEP}"
                )
                sql = backfill.format(table=self.table(table), minute=minute)
                out.append((sql, "backfill"))
        for names in RETIRED_INDEXES.values():
            prefix = f"{self._quote(self.schema)}." if self.postgres and self.schema else ""
            for name in names:
                out.append((f"DROP INDEX IF EXISTS {prefix}{self._quote(name)}", ""))
        for table in tables:
            for index in sorted(table.indexes, key=lambda i: i.name or ""):
                sql = str(CreateIndex(index, if_not_exists=True).compile(dialect=self.dialect))
                out.append((sql, "guarantee" if index.name in GUARANTEES else ""))
        return out

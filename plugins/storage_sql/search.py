"""Search, conversation filters and data rights on SQL (``core.storage.Searchable``).

**SQLite**: an FTS5 table ``messages_fts`` with the ``trigram`` tokenizer over
``messages.text`` (external content keyed by the message's rowid). An append only queues its
rowid in the same transaction; the queue is indexed off the append path every
``INDEX_INTERVAL`` seconds while messages arrive, in transactions of
``INDEX_CHUNK`` messages, and before every search, so a search sees every
message stored before it. A redaction or an erasure changes the index in its
own commit. Trigrams match substrings in any
script, which is what Chinese text needs (no spaces between words); terms of
fewer than three characters are checked with ``LIKE`` on the rows the longer
terms found, or on the site's messages when the query has no longer term.
Created at open and filled from the messages already stored (``rebuild``) when
it did not exist. A ``VACUUM`` may renumber rowids: run
``INSERT INTO messages_fts(messages_fts) VALUES('rebuild')`` after one.

**PostgreSQL**: a GIN trigram index (``pg_trgm``) on ``messages.text`` serves
``ILIKE '%term%'`` for every term. The extension is created at open when the
role may; otherwise searches scan the site's messages (logged once).

Contacts are matched with ``LIKE`` over name, e-mail and attributes, then
checked against :func:`kefu.core.storage.contact_text` (every backend agrees).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import orjson

from kefu.core.domain import Conversation, Message, Visitor
from kefu.core.storage import (
    SEARCH_LIMIT,
    ConversationFilter,
    StorageError,
    contact_text,
    holds_terms,
    search_terms,
)

from .statements import LISTING_ORDER
from .tables import (
    CONVERSATION,
    MESSAGE,
    VISITOR,
    activity_minute,
    conversations,
    messages,
    visitors,
)

log = logging.getLogger(__name__)

#: A term shorter than this cannot use the trigram index (SQLite FTS5, pg_trgm).
TRIGRAM = 3


def like_pattern(term: str) -> str:
    """``%term%`` with ``\\``, ``%`` and ``_`` escaped (``ESCAPE '\\'``)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


#: Messages indexed per write transaction by the catch-up (keeps each commit short).
INDEX_CHUNK = 256
#: Seconds between catch-ups while messages arrive (a search catches up first anyway).
INDEX_INTERVAL = 0.5

#: Triggers of kefu before the index left the append path (replaced at open).
_OLD_TRIGGERS = ("messages_fts_insert", "messages_fts_delete", "messages_fts_update")


def _sqlite_fts_setup(conn: sqlite3.Connection, table: str) -> bool:
    """In the writer's transaction: the FTS table, its queue and triggers; True when built.

    An append only queues its rowid (``messages_fts_pending``, one b-tree insert); the
    catch-up (:func:`_sqlite_fts_catch_up`) indexes the queue off the append path. A
    redaction or an erasure keeps the index exact either way: a row still queued is not
    in the index (nothing to remove, and the catch-up reads its text as it is then), a
    row indexed is removed or re-indexed in the same transaction.
    """
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'"
    ).fetchone()
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
        f"text, content={table}, content_rowid='rowid', tokenize='trigram')"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS messages_fts_pending (rowid INTEGER PRIMARY KEY)")
    for name in _OLD_TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    queued = "EXISTS (SELECT 1 FROM messages_fts_pending WHERE rowid = old.rowid)"
    unindex = (
        "INSERT INTO messages_fts(messages_fts, rowid, text) "
        f"SELECT 'delete', old.rowid, old.text WHERE NOT {queued};"
    )
    reindex = (
        f"INSERT INTO messages_fts(rowid, text) SELECT new.rowid, new.text WHERE NOT {queued};"
    )
    for name, event, body in (
        (
            "messages_fts_queue",
            "AFTER INSERT",
            "INSERT OR IGNORE INTO messages_fts_pending(rowid) VALUES (new.rowid);",
        ),
        (
            "messages_fts_unindex",
            "AFTER DELETE",
            unindex + " DELETE FROM messages_fts_pending WHERE rowid = old.rowid;",
        ),
        ("messages_fts_reindex", "AFTER UPDATE OF text", unindex + " " + reindex),
    ):
        conn.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {event} ON {table} BEGIN {body} END")
    if not exists:
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        conn.execute("DELETE FROM messages_fts_pending")
    return not exists


#: Whether any message waits to be indexed (read on a reader connection).
_ANY_QUEUED = "SELECT 1 FROM messages_fts_pending LIMIT 1"


def _sqlite_fts_catch_up(conn: sqlite3.Connection, table: str) -> bool:
    """In the writer's transaction: index up to INDEX_CHUNK queued messages; True if more wait."""
    chunk = f"SELECT rowid FROM messages_fts_pending ORDER BY rowid LIMIT {INDEX_CHUNK}"
    conn.execute(
        f"INSERT INTO messages_fts(rowid, text) SELECT rowid, text FROM {table} "
        f"WHERE rowid IN ({chunk})"
    )
    conn.execute(f"DELETE FROM messages_fts_pending WHERE rowid IN ({chunk})")
    return conn.execute("SELECT 1 FROM messages_fts_pending LIMIT 1").fetchone() is not None


def _sqlite_delete_visitor(
    conn: sqlite3.Connection, tables: tuple[str, str, str], site_id: str, visitor_id: str
) -> int:
    m, c, v = tables
    gone = conn.execute(f"DELETE FROM {v} WHERE site_id = ? AND id = ?", (site_id, visitor_id))
    if gone.rowcount != 1:
        return -1
    removed = conn.execute(
        f"DELETE FROM {m} WHERE site_id = ? AND conversation_id IN "
        f"(SELECT id FROM {c} WHERE site_id = ? AND visitor_id = ?)",
        (site_id, site_id, visitor_id),
    ).rowcount
    conn.execute(f"DELETE FROM {c} WHERE site_id = ? AND visitor_id = ?", (site_id, visitor_id))
    return removed


class SqlSearch:
    """The Searchable methods of :class:`~kefu.plugins.storage_sql.SqlStorage` (a mixin)."""

    is_sqlite: bool
    appender: Any  # SqlStorage's GroupCommit (its ``items`` counts stored messages)
    _trigram_index = False
    _indexer: asyncio.Task | None = None
    _indexing: asyncio.Lock  # SqlStorage.__init__ makes it

    def _ready(self) -> tuple[Any, Any]:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def _open_search(self) -> None:
        db, sql = self._ready()
        visitors_index = (
            f"CREATE INDEX IF NOT EXISTS visitors_site_seen ON {sql.table(visitors)} "
            "(site_id, last_seen_at)"
        )
        # newest-first scans (a short term, a query with no indexed term) stop at the limit
        messages_index = (
            f"CREATE INDEX IF NOT EXISTS messages_site_created ON {sql.table(messages)} "
            "(site_id, created_at)"
        )
        if self.is_sqlite:
            built = await db.write(_sqlite_fts_setup, sql.table(messages), what="search index")
            if built:
                log.info("sql: search index built from the stored messages")
            await self._index_queued()  # left queued by a process that stopped
            self._indexer = asyncio.get_running_loop().create_task(
                self._index_while_open(), name="kefu-sql-search-index"
            )
            await db.execute(visitors_index, (), "search index")
            await db.execute(messages_index, (), "search index")
            return
        # PostgreSQL: DDL through fetch_all (a status, no row count); another process
        # creating the same index at the same moment is logged, not fatal
        await self._pg_ddl(visitors_index)
        await self._pg_ddl(messages_index)
        await self._pg_ddl("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        row = await db.fetch_one(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'",
            (),
        )
        if row is None:
            log.warning("sql: no pg_trgm extension: message search scans the site's messages")
            return
        self._trigram_index = await self._pg_ddl(
            f"CREATE INDEX IF NOT EXISTS messages_text_trgm ON {sql.table(messages)} "
            f"USING gin (text {row[0]}.gin_trgm_ops)"
        )

    async def _index_queued(self) -> None:
        """Index every queued message (SQLite), a chunk per write transaction.

        An empty queue costs a read, not a write transaction and its fsync: a reader sees
        every commit made before it starts, so every message acknowledged before the call
        (by this process or another one sharing the file) is seen queued if it is."""
        db, sql = self._ready()
        async with self._indexing:
            if await db.fetch_one(_ANY_QUEUED, (), "search index") is None:
                return
            while await db.write(_sqlite_fts_catch_up, sql.table(messages), what="search index"):
                pass

    async def _index_while_open(self) -> None:
        seen = -1
        while True:
            await asyncio.sleep(INDEX_INTERVAL)
            stored = self.appender.items
            if stored == seen:
                continue
            seen = stored
            try:
                await self._index_queued()
            except StorageError as exc:  # retried at the next interval or search
                log.warning("sql: search index catch-up failed: %s", exc)

    async def _close_search(self) -> None:
        task, self._indexer = self._indexer, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await self._index_queued()  # a clean stop leaves nothing queued
        except StorageError as exc:
            log.warning("sql: search index catch-up at close failed: %s", exc)

    async def _pg_ddl(self, statement: str) -> bool:
        try:
            await self._ready()[0].fetch_all(statement, (), "search index")
        except StorageError as exc:
            log.warning("sql: %s failed (%s); search works without it, slower", statement, exc)
            return False
        return True

    # -- reads -------------------------------------------------------------------------------
    async def search_messages(
        self, site_id: str, query: str, *, limit: int = 20, before: float | None = None
    ) -> list[Message]:
        terms = search_terms(query)
        limit = min(max(limit, 0), SEARCH_LIMIT)
        if not terms or not limit:
            return []
        db, sql = self._ready()
        fields = sql.cols(MESSAGE.fields, "m.")
        like = "LIKE" if self.is_sqlite else "ILIKE"
        long_terms = [t for t in terms if len(t) >= TRIGRAM]
        if self.is_sqlite and long_terms:
            await self._index_queued()  # every message stored before this search
        params: list[Any] = []
        if self.is_sqlite and long_terms:
            head = (
                f"SELECT {fields} FROM messages_fts JOIN {sql.table(messages)} AS m "
                "ON m.rowid = messages_fts.rowid WHERE messages_fts MATCH ? AND m.site_id = ?"
            )
            params += [" ".join(_fts_phrase(t) for t in long_terms), site_id]
            checked = [t for t in terms if len(t) < TRIGRAM]
        else:
            head = f"SELECT {fields} FROM {sql.table(messages)} AS m WHERE m.site_id = ?"
            params.append(site_id)
            checked = terms
        clauses = [head, "m.type <> 'event'"]
        for term in checked:
            clauses.append(f"m.text {like} ? ESCAPE '\\'")
            params.append(like_pattern(term))
        if before is not None:
            clauses.append("m.created_at < ?")
            params.append(before)
        # the FTS path sorts its few rows ("+": never walk the created_at index probing FTS
        # for each row); the scan path walks that index newest first and stops at the limit
        order = "+m.created_at" if self.is_sqlite and long_terms else "m.created_at"
        stmt = " AND ".join(clauses) + f" ORDER BY {order} DESC LIMIT ?"
        params.append(limit)
        rows = await db.fetch_all(sql.text(stmt), params, "search")
        found = [MESSAGE.decode(row) for row in rows]
        return [m for m in found if holds_terms(m.text, terms)]

    async def search_visitors(self, site_id: str, query: str, *, limit: int = 20) -> list[Visitor]:
        terms = search_terms(query)
        limit = min(max(limit, 0), SEARCH_LIMIT)
        if not terms or not limit:
            return []
        db, sql = self._ready()
        like = "LIKE" if self.is_sqlite else "ILIKE"
        text = "(coalesce(name, '') || ' ' || coalesce(email, '') || ' ' || attributes)"
        clauses = ["site_id = ?"] + [f"{text} {like} ? ESCAPE '\\'" for _ in terms]
        stmt = (
            f"SELECT {sql.cols(VISITOR.fields)} FROM {sql.table(visitors)} "
            f"WHERE {' AND '.join(clauses)} ORDER BY last_seen_at DESC, id DESC LIMIT ?"
        )
        params = [site_id, *(like_pattern(t) for t in terms), limit * 4]
        rows = await db.fetch_all(sql.text(stmt), params, "search")
        found = [VISITOR.decode(row) for row in rows]
        return [v for v in found if holds_terms(contact_text(v), terms)][:limit]

    async def list_visitors(
        self, site_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[Visitor]:
        db, sql = self._ready()
        stmt = f"SELECT {sql.cols(VISITOR.fields)} FROM {sql.table(visitors)} WHERE site_id = ?"
        params: list[Any] = [site_id]
        if before is not None:
            stmt += " AND last_seen_at < ?"
            params.append(before)
        stmt += " ORDER BY last_seen_at DESC, id DESC LIMIT ?"
        params.append(max(limit, 0))
        return [VISITOR.decode(r) for r in await db.fetch_all(sql.text(stmt), params, "contacts")]

    async def find_conversations(
        self,
        site_id: str,
        where: ConversationFilter,
        *,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        db, sql = self._ready()
        clauses, params = ["site_id = ?"], [site_id]

        def within(column: str, values: tuple[str, ...]) -> None:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "1 = 0")
            params.extend(values)

        if where.states:
            within("state", where.states)
        if where.assignee_id == "":
            clauses.append("assignee_id IS NULL")
        elif where.assignee_id is not None:
            clauses.append("assignee_id = ?")
            params.append(where.assignee_id)
        if where.department is not None:
            clauses.append("department = ?")
            params.append(where.department)
        if where.tag is not None:
            clauses.append("tags LIKE ? ESCAPE '\\'")
            params.append(like_pattern(orjson.dumps(where.tag).decode()))
        if where.since is not None:
            clauses.append("created_at >= ?")
            params.append(where.since)
        if where.until is not None:
            clauses.append("created_at < ?")
            params.append(where.until)
        if where.ids is not None:
            within("id", where.ids)
        if where.visitor_ids is not None:
            within("visitor_id", where.visitor_ids)
        if before is not None:
            clauses.append("active_at <= ? AND updated_at < ?")
            params += (activity_minute(before), before)
        stmt = (
            f"SELECT {sql.cols(CONVERSATION.fields)} FROM {sql.table(conversations)} "
            f"WHERE {' AND '.join(clauses)} ORDER BY {LISTING_ORDER} LIMIT ?"
        )
        params.append(max(limit, 0))
        rows = await db.fetch_all(sql.text(stmt), params, "conversations")
        return [c for c in (CONVERSATION.decode(r) for r in rows) if where.matches(c)]

    # -- writes ------------------------------------------------------------------------------
    async def redact_message(
        self, site_id: str, conversation_id: str, seq: int, *, text: str, meta: dict[str, Any]
    ) -> bool:
        db, sql = self._ready()
        try:
            meta_text = orjson.dumps(meta).decode()
        except TypeError as exc:
            raise StorageError(f"message meta: {exc}") from None
        stmt = (
            f"UPDATE {sql.table(messages)} SET text = ?, attachment = NULL, meta = ? "
            "WHERE site_id = ? AND conversation_id = ? AND seq = ?"
        )
        params = (text, meta_text, site_id, conversation_id, seq)
        return await db.execute(sql.text(stmt), params, "redact message") == 1

    async def delete_visitor(self, site_id: str, visitor_id: str) -> int:
        db, sql = self._ready()
        m, c, v = (sql.table(t) for t in (messages, conversations, visitors))
        if self.is_sqlite:
            return await db.write(
                _sqlite_delete_visitor, (m, c, v), site_id, visitor_id, what="delete visitor"
            )
        stmt = (
            f"WITH v AS (DELETE FROM {v} WHERE site_id = $1 AND id = $2 RETURNING id), "
            f"c AS (DELETE FROM {c} WHERE site_id = $1 AND visitor_id = $2 "
            "AND EXISTS (SELECT 1 FROM v) RETURNING id), "
            f"m AS (DELETE FROM {m} WHERE site_id = $1 AND conversation_id IN "
            "(SELECT id FROM c) RETURNING 1) "
            "SELECT (SELECT count(*) FROM v), (SELECT count(*) FROM m)"
        )
        row = await db.execute_returning(stmt, (site_id, visitor_id), "delete visitor")
        return int(row[1]) if row[0] else -1

"""``SqlStorage``: the StorageBackend on SQLite (``sqlite3``) or PostgreSQL (``asyncpg``).

The schema is SQLAlchemy Core (``tables.py``); the statements are SQL text
built from it once per database (``statements.py``) and run by the driver
directly, so a call costs what the driver costs: no statement is built,
compiled or adapted per call. The two drivers (``sqlite.py``,
``postgres.py``) offer the same few primitives (``fetch_one``, ``fetch_all``,
``execute``, ``execute_returning``, ``flush_appends``); everything here is
written once for both.

Writes that must be atomic run in one transaction: on SQLite in the single
writer thread behind ``BEGIN IMMEDIATE``, which also lets concurrent writes
share one commit; on PostgreSQL the appends lock their conversation rows
(``SELECT ... FOR UPDATE``), which serialises concurrent batches of several
processes on one conversation, and a compare-and-set is one conditional
``UPDATE``.

``append_message`` goes through :class:`kefu.core.storage.GroupCommit`: one
transaction, hence one fsync, per batch of concurrent appends (appends.py).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor
from kefu.core.stats import Histogram
from kefu.core.storage import (
    UNCHANGED,
    DuplicateError,
    GroupCommit,
    Record,
    StorageError,
    VersionConflict,
    email_key,
)

from . import appends
from .blobs import SqlBlobs
from .reports import SqlReports
from .search import SqlSearch
from .statements import Statements
from .tables import AGENT, CONVERSATION, MESSAGE, SITE, TABLES, VISITOR, Codec, activity_minute

log = logging.getLogger(__name__)

BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _picker(cls: type, names: Sequence[str]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """Parameters in ``names`` order from an encoded row of ``cls``."""
    columns = TABLES[cls][1].columns
    get = operator.itemgetter(*(columns.index(n) for n in names))
    return (lambda row: (get(row),)) if len(names) == 1 else get  # type: ignore[return-value]


_SITE_UPDATE = _picker(Site, [*Statements.set_columns(Site, ["id"]), "id"])
_AGENT_KEYS = ["site_id", "id"]
_AGENT_UPDATE = _picker(Agent, [*Statements.set_columns(Agent, _AGENT_KEYS), *_AGENT_KEYS])
_CONV_KEYS = ["site_id", "id"]
_CONV_UPDATE = _picker(
    Conversation,
    [*Statements.set_columns(Conversation, _CONV_KEYS, ["last_seq", "version"]), *_CONV_KEYS],
)
_LAST_SEQ = CONVERSATION.fields.index("last_seq")
_CONV_FIELDS = len(CONVERSATION.fields)
_V_SITE, _V_ID, _V_CREATED = (VISITOR.fields.index(n) for n in ("site_id", "id", "created_at"))


class SqlStorage(SqlSearch, SqlReports, SqlBlobs):
    """The ``sql`` backend. ``url``: ``sqlite[+driver]:///path`` or ``postgresql[+asyncpg]://...``."""

    name = "sql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        batch_max: int = 256,
        batch_window: float = 0.0,
        sqlite_synchronous: str = "full",
        sqlite_cache_mib: int = 64,
        sqlite_checkpoint_ms: float = 200.0,
        pool_size: int = 5,
        pool_timeout: float = 30.0,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.schema = schema
        self.sqlite_synchronous = sqlite_synchronous.upper()
        self.sqlite_cache_mib = sqlite_cache_mib
        self.sqlite_checkpoint_ms = sqlite_checkpoint_ms
        self.is_sqlite = url.startswith("sqlite")
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._echo = echo
        self._db: Any = None  # SqliteDriver or PostgresDriver, once open
        self._sql: Statements | None = None
        self.appender: GroupCommit[appends.Pending, tuple[Message, bool]] = GroupCommit(
            self._flush_appends, max_batch=batch_max, window=batch_window, name="kefu-sql-append"
        )
        # PostgreSQL: concurrent visitor upserts as one statement (SQLite's writer thread
        # shares one transaction between concurrent writes of any kind already)
        self.visitor_upserts: GroupCommit[list[Any], Visitor] = GroupCommit(
            self._flush_visitors, max_batch=batch_max, window=batch_window, name="kefu-sql-visitor"
        )
        self._indexing = asyncio.Lock()  # one search-index catch-up at a time (SQLite)
        # group-commit statistics, recorded once stats() was read (a metrics scrape)
        self._appending = 0
        self._batch_stats: tuple[Histogram, Histogram] | None = None

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        try:
            url = make_url(self.url)
        except ArgumentError as exc:
            raise StorageError(f"sql: bad [sql] url: {exc}") from exc
        backend, driver = url.get_backend_name(), url.get_driver_name()
        if backend == "sqlite":
            if not url.database or url.database == ":memory:" or "memory" in url.query.values():
                # one shared connection would mix concurrent transactions
                raise StorageError("sql: in-memory SQLite is not supported; use backend = 'memory'")
            from .sqlite import SqliteDriver

            self._sql = Statements(postgres=False)
            db: Any = SqliteDriver(
                url.database,
                self._sql,
                synchronous=self.sqlite_synchronous,
                writer_cache_mib=self.sqlite_cache_mib,
                checkpoint_interval=self.sqlite_checkpoint_ms / 1000,
                readers=self._pool_size,
            )
        elif backend == "postgresql" and driver == "asyncpg":
            try:
                from sqlalchemy.dialects.postgresql.asyncpg import dialect

                from .postgres import PostgresDriver
            except ImportError as exc:
                raise StorageError(
                    f"sql: database driver missing: {exc}; pip install 'kefu[postgres]'"
                ) from exc
            _, connect = dialect().create_connect_args(url)
            self._sql = Statements(postgres=True, schema=self.schema)
            db = PostgresDriver(
                connect, self._sql, pool_size=self._pool_size, pool_timeout=self._pool_timeout
            )
        else:
            raise StorageError(
                f"sql: bad [sql] url: {backend}+{driver} is not supported "
                "(sqlite:///path or postgresql+asyncpg://...)"
            )
        await db.open()
        self._db = db
        if self._echo:
            self._db = _Echo(db)
        try:
            await self._open_search()  # search.py
        except BaseException:
            await self.close()
            raise
        log.info("sql storage open: %s", url.render_as_string(hide_password=True))

    async def close(self) -> None:
        await self.appender.close()
        await self.visitor_upserts.close()
        if self._db is not None:
            await self._close_search()  # search.py
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _ready(self) -> tuple[Any, Statements]:
        if self._db is None or self._sql is None:
            raise StorageError("sql storage is not open")
        return self._db, self._sql

    async def ping(self) -> None:
        db, _ = self._ready()
        await db.fetch_one("SELECT 1", (), "ping")

    async def _one(self, codec: Codec, sql: str, params: Sequence[Any]) -> Any:
        row = await self._ready()[0].fetch_one(sql, params)
        return codec.decode(row) if row is not None else None

    async def _all(self, codec: Codec, sql: str, params: Sequence[Any]) -> list[Any]:
        return [codec.decode(row) for row in await self._ready()[0].fetch_all(sql, params)]

    # -- sites ----------------------------------------------------------------
    async def create_site(self, site: Site) -> Site:
        db, sql = self._ready()
        await db.execute(sql.insert[Site], SITE.encode(site), f"site {site.id}")
        return site

    async def get_site(self, site_id: str) -> Site | None:
        return await self._one(SITE, self._ready()[1].by_key[Site], (site_id,))

    async def get_site_by_widget_key(self, widget_key: str) -> Site | None:
        return await self._one(SITE, self._ready()[1].site_by_widget_key, (widget_key,))

    async def list_sites(self) -> list[Site]:
        return await self._all(SITE, self._ready()[1].sites, ())

    async def update_site(self, site: Site) -> bool:
        db, sql = self._ready()
        params = _SITE_UPDATE(SITE.encode(site))
        return await db.execute(sql.update_site, params, "site widget key") == 1

    # -- agents ---------------------------------------------------------------
    async def create_agent(self, agent: Agent) -> Agent:
        db, sql = self._ready()
        await db.execute(
            sql.insert[Agent], AGENT.encode(agent), f"agent e-mail {agent.email!r} or id"
        )
        return agent

    async def get_agent(self, site_id: str, agent_id: str) -> Agent | None:
        return await self._one(AGENT, self._ready()[1].by_key[Agent], (site_id, agent_id))

    async def get_agent_by_email(self, site_id: str, email: str) -> Agent | None:
        sql = self._ready()[1].agent_by_email
        return await self._one(AGENT, sql, (site_id, email_key(email)))

    async def list_agents(self, site_id: str) -> list[Agent]:
        return await self._all(AGENT, self._ready()[1].agents, (site_id,))

    async def update_agent(self, agent: Agent) -> bool:
        db, sql = self._ready()
        params = _AGENT_UPDATE(AGENT.encode(agent))
        return await db.execute(sql.update_agent, params, f"agent e-mail {agent.email!r}") == 1

    # -- visitors -------------------------------------------------------------
    async def upsert_visitor(self, visitor: Visitor) -> Visitor:
        db, sql = self._ready()
        row = VISITOR.encode(visitor)
        if not self.is_sqlite:
            return await self.visitor_upserts.submit(row)
        return VISITOR.decode(await db.execute_returning(sql.upsert_visitor, row, "visitor"))

    async def _flush_visitors(self, batch: list[list[Any]]) -> list[Visitor | Exception]:
        """PostgreSQL: a batch of upserts as one ``INSERT ... SELECT unnest ... ON CONFLICT``.

        One statement may not touch a row twice, so a visitor upserted twice in the
        batch goes in once, with the last values and the first ``created_at``; each
        caller gets back its own values with the ``created_at`` stored, which is what
        the upserts one after another would have returned.
        """
        db, sql = self._ready()
        if len(batch) == 1:
            try:
                row = await db.execute_returning(sql.upsert_visitor, batch[0], "visitor")
                return [VISITOR.decode(row)]
            except StorageError as exc:
                return [exc]
        merged: dict[tuple[str, str], list[Any]] = {}
        for row in batch:
            key = (row[_V_SITE], row[_V_ID])
            first = merged.get(key)
            merged[key] = (
                row
                if first is None
                else [*row[:_V_CREATED], first[_V_CREATED], *row[_V_CREATED + 1 :]]
            )
        try:
            stored = {(r[0], r[1]): r[2] for r in await db.upsert_visitors(list(merged.values()))}
        except StorageError as exc:
            if isinstance(exc.__cause__, db.LOST):
                raise
            log.warning(
                "sql: a batch of %d visitor upserts failed (%s); one by one", len(batch), exc
            )
            return [(await self._flush_visitors([row]))[0] for row in batch]
        results: list[Visitor | Exception] = []
        for row in batch:
            values = list(row)
            values[_V_CREATED] = stored[row[_V_SITE], row[_V_ID]]
            results.append(VISITOR.decode(values))
        return results

    async def get_visitor(self, site_id: str, visitor_id: str) -> Visitor | None:
        return await self._one(VISITOR, self._ready()[1].by_key[Visitor], (site_id, visitor_id))

    # -- conversations --------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> Conversation:
        db, sql = self._ready()
        row = CONVERSATION.encode(conversation)
        row[_LAST_SEQ] = 0
        await db.execute(sql.insert[Conversation], row, f"conversation {conversation.id}")
        return CONVERSATION.decode(row[:_CONV_FIELDS])

    async def open_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        for _ in range(5):
            try:
                return await self.create_conversation(conversation), True
            except DuplicateError:  # the unique index of open conversations (or the id)
                pass
            stmt = self._ready()[1].open_conversation_of()
            params = (conversation.site_id, conversation.visitor_id, 1)
            found = await self._one(CONVERSATION, stmt, params)
            if found is not None:
                return found, False
            # resolved between the two statements: try to create again
        raise StorageError("conversation: the visitor's open conversation keeps changing")

    async def get_conversation(self, site_id: str, conversation_id: str) -> Conversation | None:
        sql = self._ready()[1].by_key[Conversation]
        return await self._one(CONVERSATION, sql, (site_id, conversation_id))

    async def list_conversations(
        self,
        site_id: str,
        *,
        state: str | None = None,
        assignee_id: str | None = None,
        visitor_id: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        _, sql = self._ready()
        wanted = (state, assignee_id, visitor_id, before)
        params = [site_id, *(v for v in wanted[:3] if v is not None)]
        if before is not None:
            params += (activity_minute(before), before)
        params.append(max(limit, 0))
        stmt = sql.conversations(*(v is not None for v in wanted))
        return await self._all(CONVERSATION, stmt, params)

    async def update_conversation(
        self,
        conversation: Conversation,
        *,
        if_state: str | None = None,
        if_assignee: Any = UNCHANGED,
        if_version: int | None = None,
    ) -> bool:
        db, sql = self._ready()
        params = list(_CONV_UPDATE(CONVERSATION.encode(conversation)))  # no last_seq, version
        if if_state is not None:
            params.append(if_state)
        if if_assignee is UNCHANGED:
            mode = ""
        elif if_assignee is None:
            mode = "null"
        else:
            mode = "eq"
            params.append(if_assignee)
        if if_version is not None:
            params.append(if_version)
        stmt = sql.update_conversation(if_state is not None, mode, if_version is not None)
        return await db.execute(stmt, params, "conversation") == 1

    # -- messages -------------------------------------------------------------
    async def append_message(self, message: Message) -> tuple[Message, bool]:
        item = appends.pending(message)  # a message that cannot be encoded fails here, alone
        self._appending += 1
        try:
            return await self.appender.submit(item)
        finally:
            self._appending -= 1

    async def _flush_appends(self, batch: list[appends.Pending]) -> list[appends.Result]:
        db, _ = self._ready()
        timed = self._batch_stats
        started = time.perf_counter() if timed is not None else 0.0
        results = await db.flush_appends(batch)
        if timed is not None:
            sizes, seconds = timed
            sizes.observe(len(batch))
            seconds.observe(time.perf_counter() - started)
        return results

    # -- plugin records ---------------------------------------------------------
    async def get_record(self, site_id: str, kind: str, record_id: str) -> Record | None:
        db, sql = self._ready()
        row = await db.fetch_one(sql.record, (site_id, kind, record_id))
        if row is None:
            return None
        return Record(site_id, kind, record_id, orjson.loads(row[1]), row[0], row[2])

    async def put_record(
        self,
        site_id: str,
        kind: str,
        record_id: str,
        data: dict[str, Any],
        *,
        expect_version: int | None = None,
    ) -> Record:
        db, sql = self._ready()
        try:
            text = orjson.dumps(data).decode()
        except TypeError as exc:
            raise StorageError(f"record {kind}/{record_id}: {exc}") from None
        now, what = time.time(), f"record {kind}/{record_id}"
        if expect_version is None:
            stmt, params = sql.record_put, (site_id, kind, record_id, text, now)
        elif expect_version == 0:
            stmt, params = sql.record_create, (site_id, kind, record_id, text, now)
        else:
            stmt = sql.record_replace
            params = (text, now, site_id, kind, record_id, expect_version)  # type: ignore[assignment]
        row = await db.execute_returning(stmt, params, what)
        if row is None:
            raise VersionConflict(f"{what} is not at version {expect_version}")
        return Record(site_id, kind, record_id, orjson.loads(text), row[0], row[1])

    async def list_records(
        self,
        site_id: str,
        kind: str,
        *,
        prefix: str = "",
        after: str = "",
        limit: int = 100,
    ) -> list[Record]:
        db, sql = self._ready()
        params = (site_id, kind, after, prefix, len(prefix), prefix, max(limit, 0))
        return [
            Record(site_id, kind, row[0], orjson.loads(row[2]), row[1], row[3])
            for row in await db.fetch_all(sql.records, params)
        ]

    async def delete_record(
        self, site_id: str, kind: str, record_id: str, *, expect_version: int | None = None
    ) -> bool:
        db, sql = self._ready()
        key = (site_id, kind, record_id)
        if expect_version is None:
            return await db.execute(sql.record_delete, key, "record") == 1
        if expect_version == 0:  # "only while absent": nothing to delete, or a conflict
            if await db.fetch_one(sql.record, key) is not None:
                raise VersionConflict(f"record {kind}/{record_id} exists")
            return False
        if await db.execute(sql.record_delete_if, (*key, expect_version), "record") == 1:
            return True
        raise VersionConflict(f"record {kind}/{record_id} is not at version {expect_version}")

    def stats(self) -> dict[str, Any]:
        """Group commit in the ``kefu_stats`` shape; the histograms start at the first call."""
        if self._batch_stats is None:
            self._batch_stats = (Histogram(BATCH_SIZE_BOUNDS), Histogram(BATCH_SECONDS_BOUNDS))
        sizes, seconds = self._batch_stats
        return {
            "storage_appends_waiting": self._appending,
            "storage_append_batches_total": self.appender.batches,
            "storage_appends_total": self.appender.items,
            "storage_append_batch_size": sizes.snapshot(),
            "storage_append_batch_seconds": seconds.snapshot(),
        }

    async def list_messages(
        self, site_id: str, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Message]:
        sql = self._ready()[1].messages_after
        return await self._all(MESSAGE, sql, (site_id, conversation_id, after_seq, max(limit, 0)))

    async def list_messages_before(
        self, site_id: str, conversation_id: str, *, before_seq: int, limit: int = 50
    ) -> list[Message]:
        sql = self._ready()[1].messages_before
        params = (site_id, conversation_id, before_seq, max(limit, 0))
        return list(reversed(await self._all(MESSAGE, sql, params)))


class _Echo:
    """``[sql] echo``: log every statement a driver runs."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._db, name)
        if name not in ("fetch_one", "fetch_all", "execute", "execute_returning"):
            return attr

        def logged(sql: str, params: Sequence[Any], *args: Any) -> Any:
            log.info("sql: %s %r", sql, params)
            return attr(sql, params, *args)

        return logged

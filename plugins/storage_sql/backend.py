"""``SqlStorage``: the StorageBackend on SQLAlchemy's async engine (SQLite or PostgreSQL).

Writes that must be atomic run in one transaction: on SQLite behind
``BEGIN IMMEDIATE`` (the write lock is taken first, so a transaction never has
to upgrade a read lock, which WAL mode refuses without waiting) and, inside
one process, behind an asyncio lock so that writers queue here instead of in
SQLite's sleeping busy handler. On PostgreSQL the appends lock their
conversation rows (``SELECT ... FOR UPDATE``), which serialises concurrent
batches of several processes on one conversation.

``append_message`` goes through :class:`kefu.core.storage.GroupCommit`: one
transaction, hence one fsync, per batch of concurrent appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy import event, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor
from kefu.core.stats import Histogram
from kefu.core.storage import (
    UNCHANGED,
    DuplicateError,
    GroupCommit,
    StorageError,
    email_key,
)

from . import appends
from .tables import agents, conversations, from_row, messages, metadata, sites, to_row, visitors

log = logging.getLogger(__name__)

BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Database errors as the interface's errors."""
    try:
        yield
    except IntegrityError as exc:
        raise DuplicateError(f"{what}: already exists or taken") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"{what}: {type(exc).__name__}: {exc}") from exc


class SqlStorage:
    """The ``sql`` backend. ``url`` is a SQLAlchemy URL with an async driver."""

    name = "sql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        batch_max: int = 256,
        batch_window: float = 0.0,
        sqlite_synchronous: str = "full",
        pool_size: int = 5,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.schema = schema
        self.sqlite_synchronous = sqlite_synchronous.upper()
        self.is_sqlite = url.startswith("sqlite")
        self._pool_size = pool_size
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._writer_engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self.appender: GroupCommit[Message, tuple[Message, bool]] = GroupCommit(
            self._flush_appends, max_batch=batch_max, window=batch_window, name="kefu-sql-append"
        )
        # group-commit statistics, recorded once stats() was read (a metrics scrape)
        self._appending = 0
        self._batch_stats: tuple[Histogram, Histogram] | None = None

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        if self.is_sqlite and ":memory:" in self.url:
            # one shared connection would mix concurrent transactions
            raise StorageError("sql: in-memory SQLite is not supported; use backend = 'memory'")
        options = {"echo": self._echo, "pool_pre_ping": not self.is_sqlite}
        try:
            engine = create_async_engine(self.url, pool_size=self._pool_size, **options)
        except ImportError as exc:
            hint = "; pip install 'kefu[postgres]'" if "asyncpg" in str(exc) else ""
            raise StorageError(f"sql: database driver missing: {exc}{hint}") from exc
        except (ValueError, SQLAlchemyError) as exc:
            raise StorageError(f"sql: bad [sql] url: {exc}") from exc
        if self.is_sqlite:
            self._prepare_sqlite(engine)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        self._engine = engine
        self._writer_engine = engine.execution_options(kefu_write=True)
        with _errors("create tables"):
            async with self._writer_engine.begin() as conn:
                if self.schema:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                await conn.run_sync(metadata.create_all)
        log.info("sql storage open: %s", engine.url.render_as_string(hide_password=True))

    def _prepare_sqlite(self, engine: AsyncEngine) -> None:
        synchronous = self.sqlite_synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=10000")  # other processes' writers
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(conn: Any) -> None:
            write = conn.get_execution_options().get("kefu_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    async def close(self) -> None:
        await self.appender.close()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._writer_engine = None

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(text("SELECT 1"))

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        if self._engine is None:
            raise StorageError("sql storage is not open")
        with _errors("read"):
            async with self._engine.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _write(self, what: str = "write") -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on exit; serialised in-process on SQLite."""
        if self._writer_engine is None:
            raise StorageError("sql storage is not open")
        lock = self._write_lock if self.is_sqlite else contextlib.nullcontext()
        async with lock:
            with _errors(what):
                async with self._writer_engine.begin() as conn:
                    yield conn

    async def _one(self, cls: type, stmt: Any) -> Any:
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return from_row(cls, row) if row is not None else None

    async def _all(self, cls: type, stmt: Any) -> list[Any]:
        async with self._read() as conn:
            return [from_row(cls, row) for row in await conn.execute(stmt)]

    async def _insert(self, table: Any, record: Any, what: str) -> None:
        row = to_row(record)
        async with self._write(what) as conn:
            await conn.execute(insert(table).values(row))

    async def _update(self, table: Any, record: Any, where: list[Any], what: str) -> bool:
        row = to_row(record)
        async with self._write(what) as conn:
            result = await conn.execute(update(table).where(*where).values(row))
        return result.rowcount == 1

    # -- sites ----------------------------------------------------------------
    async def create_site(self, site: Site) -> Site:
        await self._insert(sites, site, f"site {site.id}")
        return site

    async def get_site(self, site_id: str) -> Site | None:
        return await self._one(Site, select(sites).where(sites.c.id == site_id))

    async def get_site_by_widget_key(self, widget_key: str) -> Site | None:
        return await self._one(Site, select(sites).where(sites.c.widget_key == widget_key))

    async def list_sites(self) -> list[Site]:
        return await self._all(Site, select(sites).order_by(sites.c.created_at, sites.c.id))

    async def update_site(self, site: Site) -> bool:
        return await self._update(sites, site, [sites.c.id == site.id], "site widget key")

    # -- agents ---------------------------------------------------------------
    async def create_agent(self, agent: Agent) -> Agent:
        await self._insert(agents, agent, f"agent e-mail {agent.email!r} or id")
        return agent

    async def get_agent(self, site_id: str, agent_id: str) -> Agent | None:
        c = agents.c
        return await self._one(Agent, select(agents).where(c.site_id == site_id, c.id == agent_id))

    async def get_agent_by_email(self, site_id: str, email: str) -> Agent | None:
        c = agents.c
        stmt = select(agents).where(c.site_id == site_id, c.email_key == email_key(email))
        return await self._one(Agent, stmt)

    async def list_agents(self, site_id: str) -> list[Agent]:
        c = agents.c
        stmt = select(agents).where(c.site_id == site_id).order_by(c.created_at, c.id)
        return await self._all(Agent, stmt)

    async def update_agent(self, agent: Agent) -> bool:
        where = [agents.c.site_id == agent.site_id, agents.c.id == agent.id]
        return await self._update(agents, agent, where, f"agent e-mail {agent.email!r}")

    # -- visitors -------------------------------------------------------------
    async def upsert_visitor(self, visitor: Visitor) -> Visitor:
        row = to_row(visitor)
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(visitors).values(row)
        changed = {k: stmt.excluded[k] for k in row if k not in ("site_id", "id", "created_at")}
        stmt = stmt.on_conflict_do_update(index_elements=["site_id", "id"], set_=changed)
        async with self._write("visitor") as conn:
            stored = (await conn.execute(stmt.returning(*visitors.c))).one()
        return from_row(Visitor, stored)

    async def get_visitor(self, site_id: str, visitor_id: str) -> Visitor | None:
        c = visitors.c
        stmt = select(visitors).where(c.site_id == site_id, c.id == visitor_id)
        return await self._one(Visitor, stmt)

    # -- conversations --------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> Conversation:
        row = to_row(conversation)
        row["last_seq"] = 0
        async with self._write(f"conversation {conversation.id}") as conn:
            await conn.execute(insert(conversations).values(row))
        return from_row(Conversation, row)

    async def get_conversation(self, site_id: str, conversation_id: str) -> Conversation | None:
        c = conversations.c
        stmt = select(conversations).where(c.site_id == site_id, c.id == conversation_id)
        return await self._one(Conversation, stmt)

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
        c = conversations.c
        stmt = select(conversations).where(c.site_id == site_id)
        if state is not None:
            stmt = stmt.where(c.state == state)
        if assignee_id is not None:
            stmt = stmt.where(c.assignee_id == assignee_id)
        if visitor_id is not None:
            stmt = stmt.where(c.visitor_id == visitor_id)
        if before is not None:
            stmt = stmt.where(c.updated_at < before)
        stmt = stmt.order_by(c.updated_at.desc(), c.id.desc()).limit(max(limit, 0))
        return await self._all(Conversation, stmt)

    async def update_conversation(
        self,
        conversation: Conversation,
        *,
        if_state: str | None = None,
        if_assignee: Any = UNCHANGED,
    ) -> bool:
        c = conversations.c
        where = [c.site_id == conversation.site_id, c.id == conversation.id]
        if if_state is not None:
            where.append(c.state == if_state)
        if if_assignee is not UNCHANGED:
            where.append(
                c.assignee_id.is_(None) if if_assignee is None else c.assignee_id == if_assignee
            )
        row = to_row(conversation)
        del row["last_seq"]  # owned by append_message
        async with self._write("conversation") as conn:
            result = await conn.execute(update(conversations).where(*where).values(row))
        return result.rowcount == 1

    # -- messages -------------------------------------------------------------
    async def append_message(self, message: Message) -> tuple[Message, bool]:
        to_row(message)  # a message that cannot be encoded fails here, alone
        self._appending += 1
        try:
            return await self.appender.submit(message)
        finally:
            self._appending -= 1

    async def _flush_appends(self, batch: list[Message]) -> list[tuple[Message, bool] | Exception]:
        timed = self._batch_stats
        started = time.perf_counter() if timed is not None else 0.0
        async with self._write("append messages") as conn:
            results = await appends.flush(conn, batch, lock_rows=not self.is_sqlite)
        if timed is not None:
            sizes, seconds = timed
            sizes.observe(len(batch))
            seconds.observe(time.perf_counter() - started)
        return results

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
        c = messages.c
        stmt = (
            select(messages)
            .where(c.site_id == site_id, c.conversation_id == conversation_id, c.seq > after_seq)
            .order_by(c.seq)
            .limit(max(limit, 0))
        )
        return await self._all(Message, stmt)

    async def list_messages_before(
        self, site_id: str, conversation_id: str, *, before_seq: int, limit: int = 50
    ) -> list[Message]:
        c = messages.c
        stmt = (
            select(messages)
            .where(c.site_id == site_id, c.conversation_id == conversation_id, c.seq < before_seq)
            .order_by(c.seq.desc())
            .limit(max(limit, 0))
        )
        return list(reversed(await self._all(Message, stmt)))

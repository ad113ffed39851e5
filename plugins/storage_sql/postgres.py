"""PostgreSQL through asyncpg: a pool that queues, one connection reserved for appends.

- **The pool** (:class:`Pool`) holds up to ``pool_size`` connections, opened
  when first needed and kept. A caller that finds none free waits, first come
  first served, for up to ``pool_timeout_s`` (then ``unavailable``): a
  reconnect storm queues its reads instead of failing them, and no connection
  is opened past the size. A connection that broke (lost, or left mid-query by
  a cancelled caller) is closed and its place given to the next caller. It is
  a few lines of Python on the hot path where asyncpg's own pool, with its
  reset query or its task per timed acquire, costs 30-60 us per use.
- **Prepared statements.** Every statement is a constant text (statements.py)
  that asyncpg prepares once per connection and keeps in its statement cache.
- **Appends** run on a connection of their own (a pool of one), so a batch
  never waits behind reads for a connection. The batch's rows travel as one
  array per column (``unnest``): three statements per batch whatever its size
  (lock the conversations, look up the cids, store the messages and ``last_seq``).
- A read that fails because its connection was lost (a killed backend, a
  restarted server) is tried once more on another connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from kefu.core.storage import DuplicateError, StorageError

from . import appends
from .statements import Statements
from .tables import MESSAGE

log = logging.getLogger(__name__)

#: ``pg_advisory_xact_lock`` key held while the tables are created (two processes starting)
SCHEMA_LOCK = 0x6B656675  # "kefu"
#: A connection lost under the caller: worth one more try for a read.
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,  # 57P01: the backend was terminated
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting or stopping
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.InternalClientError,  # used while the server was closing it: "another operation"
    ConnectionError,
)
ERRORS = (*LOST, asyncpg.PostgresError, OSError, TimeoutError)


class Pool:
    """Up to ``size`` asyncpg connections; callers beyond wait in line, up to ``timeout`` s."""

    def __init__(self, connect: dict[str, Any], size: int, timeout: float) -> None:
        self._connect, self.size, self.timeout = connect, size, timeout
        self._free: list[asyncpg.Connection] = []
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._opened = 0  # connections open or being opened
        self.closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._acquire()
        try:
            yield conn
        except LOST:
            self._release(conn, broken=True)
            raise
        except asyncpg.PostgresError:  # the server answered: the connection is sound
            self._release(conn)
            raise
        except BaseException:  # left mid-operation (a cancelled caller): not to be reused
            self._release(conn, broken=True)
            raise
        self._release(conn)

    async def _acquire(self) -> asyncpg.Connection:
        if self.closed:
            raise StorageError("sql storage is closed")
        while self._free:
            conn = self._free.pop()
            if not conn.is_closed():
                return conn
            self._opened -= 1
        if self._opened < self.size:
            self._opened += 1
            return await self._open()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed over just as we gave up
                self._release(waiter.result())
            else:
                waiter.cancel()
            raise
        return await self._open() if conn is None else conn

    async def _open(self) -> asyncpg.Connection:
        """Open a connection in a place already counted in ``_opened``."""
        try:
            return await asyncpg.connect(**self._connect, timeout=min(self.timeout, 10.0))
        except BaseException:
            self._opened -= 1
            self._hand_over(None)
            raise

    def _release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        if broken or self.closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._opened -= 1
            self._hand_over(None)
        else:
            self._hand_over(conn)

    def _hand_over(self, conn: asyncpg.Connection | None) -> None:
        """To the first caller in line: a connection, or (``None``) a place to open one in."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if conn is None:
                if self.closed or self._opened >= self.size:
                    self._waiters.appendleft(waiter)
                    return
                self._opened += 1
            waiter.set_result(conn)
            return
        if conn is not None:
            self._free.append(conn)

    async def close(self) -> None:
        self.closed = True
        free, self._free = self._free, []
        for conn in free:
            self._opened -= 1
            with contextlib.suppress(*ERRORS):
                await asyncio.wait_for(conn.close(), 5)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(StorageError("sql storage is closed"))
        self._waiters.clear()


class PostgresDriver:
    """The pools to one PostgreSQL database."""

    LOST = LOST

    def __init__(
        self, connect: dict[str, Any], sql: Statements, *, pool_size: int, pool_timeout: float
    ) -> None:
        self._connect, self.sql = connect, sql
        self.pool_size, self.pool_timeout = pool_size, pool_timeout
        self._pool: Pool | None = None
        self._append_pool: Pool | None = None

    def error(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            err: StorageError = DuplicateError(f"{what}: already exists or taken")
        elif isinstance(exc, TimeoutError):
            err = StorageError(f"{what}: no database connection free within {self.pool_timeout} s")
        elif isinstance(exc, ERRORS):
            err = StorageError(f"{what}: {type(exc).__name__}: {exc}")
        else:
            return exc
        err.__cause__ = exc
        return err

    async def open(self) -> None:
        self._pool = Pool(self._connect, self.pool_size, self.pool_timeout)
        self._append_pool = Pool(self._connect, 1, self.pool_timeout)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                added = False  # the last "column" statement added its column
                for statement, kind in self.sql.ddl():
                    if kind == "column":
                        try:
                            async with conn.transaction():  # a savepoint
                                await conn.execute(statement)
                            added = True
                        except asyncpg.DuplicateColumnError:
                            added = False
                        continue
                    if kind == "backfill":
                        if added:
                            await conn.execute(statement)
                        continue
                    if kind != "guarantee":
                        await conn.execute(statement)
                        continue
                    try:
                        async with conn.transaction():  # a savepoint
                            await conn.execute(statement)
                    except asyncpg.UniqueViolationError as exc:
                        log.error("storage: cannot create %s (%s): fix the rows", statement, exc)
        except BaseException as exc:
            await self.close()
            raise self.error(exc, "open") from None

    async def close(self) -> None:
        pools = [p for p in (self._append_pool, self._pool) if p is not None]
        self._pool = self._append_pool = None
        for pool in pools:
            await pool.close()

    def _ready(self) -> Pool:
        if self._pool is None:
            raise StorageError("sql storage is not open")
        return self._pool

    async def _call(self, op: str, sql: str, params: Sequence[Any], what: str, retry: bool) -> Any:
        pool = self._ready()
        try:
            async with pool.connection() as conn:
                return await getattr(conn, op)(sql, *params)
        except LOST as exc:
            if not retry:
                raise self.error(exc, what) from None
            log.info("postgres: %s lost its connection (%s); trying again", what, exc)
        except ERRORS as exc:
            raise self.error(exc, what) from None
        return await self._call(op, sql, params, what, retry=False)

    # -- the primitives SqlStorage uses ----------------------------------------
    async def fetch_one(self, sql: str, params: Sequence[Any], what: str = "read") -> Any:
        return await self._call("fetchrow", sql, params, what, retry=True)

    async def fetch_all(self, sql: str, params: Sequence[Any], what: str = "read") -> list[Any]:
        return await self._call("fetch", sql, params, what, retry=True)

    async def execute(self, sql: str, params: Sequence[Any], what: str = "write") -> int:
        """One write statement (its own transaction); its row count."""
        status = await self._call("execute", sql, params, what, retry=False)
        return int(status.rsplit(" ", 1)[-1])

    async def execute_returning(self, sql: str, params: Sequence[Any], what: str = "write") -> Any:
        return await self._call("fetchrow", sql, params, what, retry=False)

    async def flush_appends(self, batch: list[appends.Pending]) -> list[appends.Result]:
        self._ready()
        assert self._append_pool is not None
        try:
            async with self._append_pool.connection() as conn, conn.transaction():
                return await _flush_appends(conn, self.sql, batch)
        except asyncpg.PostgresError as exc:
            if len(batch) == 1 or isinstance(exc, LOST):
                raise self.error(exc, "append messages") from None
            # a message the database refuses (too long a cid ...) fails alone: one by one
            log.warning("postgres: a batch of %d appends failed (%s); one by one", len(batch), exc)
        except ERRORS as exc:
            raise self.error(exc, "append messages") from None
        results: list[appends.Result] = []
        for item in batch:
            try:
                results.extend(await self.flush_appends([item]))
            except StorageError as exc:
                results.append(exc)
        return results

    async def upsert_visitors(self, rows: list[list[Any]]) -> list[Any]:
        """One statement for visitors of distinct keys; ``(site_id, id, created_at)`` each."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        return await self._call("fetch", self.sql.upsert_visitors, columns, "visitors", False)


async def _flush_appends(
    conn: asyncpg.Connection, sql: Statements, batch: list[appends.Pending]
) -> list[appends.Result]:
    """The four steps of appends.py, in ``conn``'s transaction."""
    keys = appends.conversation_keys(batch)
    heads = {
        (r[0], r[1]): [r[2], r[3]]
        for r in await conn.fetch(sql.append_heads, [k[0] for k in keys], [k[1] for k in keys])
    }
    found = {}
    if heads:
        cids = appends.cid_keys(batch)
        sites, convs, ids = ([k[i] for k in cids] for i in range(3))
        for row in await conn.fetch(sql.append_found, sites, convs, ids):
            found[row[0], row[1], row[2]] = MESSAGE.decode(row)
    results, rows, bumps, _ = appends.number(batch, heads, found)
    if rows:
        columns = [list(c) for c in zip(*rows, strict=True)]
        columns += [list(c) for c in zip(*bumps, strict=True)]
        await conn.execute(sql.append_store, *columns)
    return results

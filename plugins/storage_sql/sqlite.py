"""SQLite through the standard library's ``sqlite3``: one writer thread, a fixed pool of readers.

**The writer.** One thread owns the only connection that writes. Every write
(a batch of appends, a visitor upsert, a claim ...) is a *job*, a function run
in that thread; the thread takes every job queued, runs them in one
``BEGIN IMMEDIATE`` transaction, each in its own ``SAVEPOINT`` when there are
several (so one failing job rolls back alone), commits once, and only then
answers every caller, with one wake-up of the event loop. So concurrent writes
of any kind share one commit, i.e. one fsync with ``synchronous=full``, and a
job costs the event loop one hop, however many statements it runs.
``BEGIN IMMEDIATE`` takes the write lock before anything is read, so a
transaction never has to upgrade a read lock (which WAL mode refuses without
waiting); ``busy_timeout`` covers the writers of other processes.

**The checkpointer.** In WAL mode every commit appends pages to the ``-wal`` file and
SQLite copies them back into the database (a *checkpoint*) once the WAL holds 1,000
pages, by default inside the ``COMMIT`` that crossed the mark: a few milliseconds of
page copies and a second fsync on the writer, every half second at 2,000 msg/s, the
tail of the append latency (docs/performance.md, 2026-12-06). A thread of its own,
with its own connection, runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
``checkpoint_interval`` seconds instead (a passive checkpoint runs beside the writer and
the readers, never waiting for either), and the writer's own automatic checkpoint
is raised to :data:`BACKSTOP_PAGES`, so it runs only if the checkpointer falls behind.

**The readers.** ``pool_size`` threads, each with its own connection, opened
at start-up and kept: a read is a job on their shared queue, one hop, a single
statement in autocommit mode (one statement is one consistent snapshot in WAL
mode, so no ``BEGIN``/``ROLLBACK`` around it). Under a storm reads wait in the
queue; no connection is ever opened for one read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from kefu.core.storage import DuplicateError, StorageError

from . import appends
from .statements import Statements, bucket
from .tables import MESSAGE

log = logging.getLogger(__name__)

#: Most jobs one write transaction takes (a job may itself be a batch of appends).
MAX_JOBS = 512
#: Most keys in one lookup statement (3 variables each, under SQLite's 32,766).
MAX_KEYS = 4096
#: Most rows in one multi-row INSERT / UPDATE (a message is ~20 variables).
MAX_ROWS = 256

#: The writer's ``wal_autocheckpoint`` (pages) while the checkpointer thread runs: a
#: backstop that bounds the WAL if the checkpointer falls behind (about 40 MiB).
BACKSTOP_PAGES = 10_000

Job = tuple[asyncio.Future, Callable[..., Any], tuple, str]


def database_error(exc: BaseException, what: str) -> BaseException:
    """A driver error as the storage interface's error (anything else passes as it is)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.IntegrityError):
        err: StorageError = DuplicateError(f"{what}: already exists or taken")
    elif isinstance(exc, sqlite3.Error):
        err = StorageError(f"{what}: {type(exc).__name__}: {exc}")
    else:
        return exc
    err.__cause__ = exc
    return err


def _answer(loop: asyncio.AbstractEventLoop, answers: list) -> None:
    """From a thread: hand ``answers`` to their loop (gone already: nobody is waiting)."""
    try:
        loop.call_soon_threadsafe(_deliver, answers)
    except RuntimeError:
        log.debug("sqlite: the event loop closed before %d answers", len(answers))


def _deliver(answers: list[tuple[asyncio.Future, bool, Any]]) -> None:
    """On the event loop: resolve the callers of a finished job or transaction."""
    for future, ok, value in answers:
        if future.done():  # the caller was cancelled; what it asked for happened anyway
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class _Worker(threading.Thread):
    """A thread with its own connection that runs jobs from a queue until it gets ``None``."""

    def __init__(self, driver: SqliteDriver, jobs: queue.SimpleQueue, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.driver, self.jobs = driver, jobs
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.conn: sqlite3.Connection | None = None

    def run(self) -> None:
        loop = self.ready.get_loop()
        try:
            self.conn = self.connect()
        except Exception as exc:
            _answer(loop, [(self.ready, False, database_error(exc, "open"))])
            return
        _answer(loop, [(self.ready, True, None)])
        try:
            self.serve(self.conn)
        finally:
            self.conn.close()

    def connect(self) -> sqlite3.Connection:
        return self.driver.connect()

    def serve(self, conn: sqlite3.Connection) -> None:
        while (job := self.jobs.get()) is not None:
            future, fn, args, what = job
            try:
                answer = (future, True, fn(conn, *args))
            except Exception as exc:
                answer = (future, False, database_error(exc, what))
            _answer(future.get_loop(), [answer])


class _Writer(_Worker):
    """The writer: every job queued meanwhile shares one transaction and one commit."""

    def connect(self) -> sqlite3.Connection:
        # a page cache of its own: appends touch index pages all over the file
        conn = self.driver.connect(cache_mib=self.driver.writer_cache_mib)
        if self.driver.checkpoint_interval:
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        return conn

    def serve(self, conn: sqlite3.Connection) -> None:
        while (job := self.jobs.get()) is not None:
            jobs = [job]
            stop = False
            while len(jobs) < MAX_JOBS:
                try:
                    more = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            answers = self.transaction(conn, jobs)
            self.driver.transactions += 1
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for answer in answers:
                by_loop.setdefault(answer[0].get_loop(), []).append(answer)
            for loop, batch in by_loop.items():
                _answer(loop, batch)
            if stop:
                return

    @staticmethod
    def transaction(conn: sqlite3.Connection, jobs: list[Job]) -> list:
        """Run ``jobs`` in one transaction; one ``(future, ok, value)`` per job."""
        answers: list[tuple[asyncio.Future, bool, Any]] = []
        nested = len(jobs) > 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for future, fn, args, what in jobs:
                if nested:
                    conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn, *args)
                except Exception as exc:
                    if not nested or not conn.in_transaction:
                        raise  # the transaction is gone: no job of it happened
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    answers.append((future, False, database_error(exc, what)))
                    continue
                if nested:
                    conn.execute("RELEASE job")
                answers.append((future, True, value))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("sqlite: rollback failed")
            what = jobs[0][3] if len(jobs) == 1 else f"a transaction of {len(jobs)} writes"
            error = database_error(exc, what)
            return [(future, False, error) for future, *_ in jobs]
        return answers


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database beside the writer (the module's docstring)."""

    def __init__(self, driver: SqliteDriver, interval: float) -> None:
        super().__init__(name="kefu-sqlite-checkpoint", daemon=True)
        self.driver, self.interval = driver, interval
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            conn = self.driver.connect()
        except sqlite3.Error as exc:
            log.warning("sqlite: no checkpointer (%s); the writer checkpoints", exc)
            return
        failing = False
        try:
            while not self.stop.wait(self.interval):
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if not failing:  # once per episode, not every interval
                        log.warning("sqlite: checkpoint failed: %s", exc)
                    failing = True
                    continue
                failing = False
                self.driver.checkpoints += 1
                self.driver.wal_pages = row[1]  # (busy, pages in the WAL, pages copied)
        finally:
            conn.close()


class SqliteDriver:
    """The connections to one SQLite file (WAL mode)."""

    def __init__(
        self,
        path: str,
        sql: Statements,
        *,
        synchronous: str,
        readers: int,
        writer_cache_mib: int = 64,
        checkpoint_interval: float = 0.2,
    ) -> None:
        self.path, self.sql = path, sql
        self.synchronous = synchronous
        self.writer_cache_mib = writer_cache_mib
        #: seconds between the checkpointer's passive checkpoints; 0: SQLite's own, in
        #: the writer's commits
        self.checkpoint_interval = checkpoint_interval
        self._checkpointer: _Checkpointer | None = None
        self.checkpoints = 0  # checkpoints the checkpointer ran (tests read it)
        self.wal_pages = 0  # the WAL's size in pages at the last one
        self._readers_wanted = readers
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[_Worker] = []
        self.transactions = 0  # write transactions committed or failed (tests read it)

    def connect(self, *, cache_mib: int | None = None) -> sqlite3.Connection:
        _create_private(self.path)
        # autocommit mode: the writer emits BEGIN IMMEDIATE / COMMIT itself
        conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=256)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")  # other processes' writers
        if cache_mib is not None:
            conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")  # KiB when negative
        return conn

    async def open(self) -> None:
        writer = _Writer(self, self._writes, "kefu-sqlite-writer")
        self._threads.append(writer)
        writer.start()
        try:
            await writer.ready  # the writer switches the file to WAL before any reader opens
            await self.write(_run_ddl, self.sql.ddl(), what="create tables")
            readers = [
                _Worker(self, self._reads, f"kefu-sqlite-reader-{i}")
                for i in range(self._readers_wanted)
            ]
            self._threads.extend(readers)
            for reader in readers:
                reader.start()
            await asyncio.gather(*(r.ready for r in readers))
            if self.checkpoint_interval:
                self._checkpointer = _Checkpointer(self, self.checkpoint_interval)
                self._checkpointer.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop.set()
            await asyncio.to_thread(checkpointer.join)
        threads, self._threads = self._threads, []
        for thread in threads:
            (self._writes if isinstance(thread, _Writer) else self._reads).put(None)
        for thread in threads:
            if thread.is_alive():
                await asyncio.to_thread(thread.join)

    # -- jobs ----------------------------------------------------------------
    def _submit(self, jobs: queue.SimpleQueue, fn: Callable, args: tuple, what: str):
        if not self._threads:
            raise StorageError("sql storage is not open")
        future = asyncio.get_running_loop().create_future()
        jobs.put((future, fn, args, what))
        return future

    def write(self, fn: Callable[..., Any], *args: Any, what: str = "write") -> asyncio.Future:
        """Run ``fn(conn, *args)`` in the writer's next transaction; its result once committed."""
        return self._submit(self._writes, fn, args, what)

    def read(self, fn: Callable[..., Any], *args: Any, what: str = "read") -> asyncio.Future:
        """Run ``fn(conn, *args)`` on a reader's connection."""
        return self._submit(self._reads, fn, args, what)

    # -- the primitives SqlStorage uses ----------------------------------------
    def fetch_one(self, sql: str, params: Sequence[Any], what: str = "read") -> asyncio.Future:
        return self.read(_fetch_one, sql, params, what=what)

    def fetch_all(self, sql: str, params: Sequence[Any], what: str = "read") -> asyncio.Future:
        return self.read(_fetch_all, sql, params, what=what)

    def execute(self, sql: str, params: Sequence[Any], what: str = "write") -> asyncio.Future:
        """One write statement; its row count once committed."""
        return self.write(_rowcount, sql, params, what=what)

    def execute_returning(
        self, sql: str, params: Sequence[Any], what: str = "write"
    ) -> asyncio.Future:
        """One write statement with ``RETURNING``; its row once committed."""
        return self.write(_fetch_one, sql, params, what=what)

    def flush_appends(self, batch: list[appends.Pending]) -> asyncio.Future:
        return self.write(_flush_appends, self.sql, batch, what="append messages")


# -- run in the threads ---------------------------------------------------------------
def _run_ddl(conn: sqlite3.Connection, statements: list[tuple[str, str]]) -> None:
    added = False  # the last "column" statement added its column
    for statement, kind in statements:
        if kind == "backfill" and not added:
            continue
        try:
            conn.execute(statement)
            added = kind == "column" or (added and kind == "backfill")
        except sqlite3.OperationalError as exc:
            if kind != "column" or "duplicate column" not in str(exc):
                raise
            added = False
        except sqlite3.IntegrityError as exc:
            if kind != "guarantee":
                raise
            log.error("storage: cannot create %s (%s): fix the rows that break it", statement, exc)


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    # fetchall: the statement runs to its end and is reset (no snapshot or write left open)
    rows = conn.execute(sql, params).fetchall()
    return rows[0] if rows else None


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _rowcount(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount


def _flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The rows' values in one list: the parameters of a multi-row statement."""
    return [value for row in rows for value in row]


def _padded(keys: list[tuple], n: int) -> list[Any]:
    """``keys`` flattened, the last one repeated up to ``n`` keys (a statement per size)."""
    return _flat(keys + [keys[-1]] * (n - len(keys)))


def _chunks(rows: list, most: int = MAX_ROWS) -> list[list]:
    """``rows`` cut into runs of a power-of-two length, at most ``most`` (so a multi-row
    statement comes in few shapes, each compiled once and kept in the statement cache)."""
    out, start = [], 0
    while start < len(rows):
        size = min(most, 1 << ((len(rows) - start).bit_length() - 1))
        out.append(rows[start : start + size])
        start += size
    return out


def _flush_appends(
    conn: sqlite3.Connection, sql: Statements, batch: list[appends.Pending]
) -> list[appends.Result]:
    """The four steps of appends.py, in the writer's transaction.

    Each statement returns or touches many rows in *one* step: the heads come back as
    one JSON row, the messages go in as multi-row ``INSERT`` statements, the conversations
    are bumped by ``UPDATE ... FROM (VALUES ...)``. ``sqlite3`` lets go of the GIL
    around every step (every row fetched, every ``executemany`` row), and taking it back
    while the event loop runs can cost up to a switch interval each time: with
    ``executemany`` a 256-message batch held the writer 129 ms for 39 ms of CPU.
    """
    heads: dict[appends.Key, list[Any]] = {}
    keys = appends.conversation_keys(batch)
    for start in range(0, len(keys), MAX_KEYS):
        chunk = keys[start : start + MAX_KEYS]
        n = bucket(len(chunk))
        (heads_json,) = conn.execute(sql.append_heads_json(n), _padded(chunk, n)).fetchone()
        for site_id, conv_id, last_seq, updated_at in orjson.loads(heads_json):
            heads[site_id, conv_id] = [last_seq, float(updated_at)]
    found = {}
    cids = appends.cid_keys(batch)
    for start in range(0, len(cids), MAX_KEYS):
        chunk = cids[start : start + MAX_KEYS]
        n = bucket(len(chunk))
        for row in conn.execute(sql.append_found(n), _padded(chunk, n)):
            found[row[0], row[1], row[2]] = MESSAGE.decode(row)
    results, rows, bumps, moved = appends.number(batch, heads, found)
    for run in _chunks(rows):
        conn.execute(sql.append_insert_rows(len(run)), _flat(run))
    for minute, width in ((True, 5), (False, 4)):
        # (site_id, id, last_seq, updated_at[, active_at])
        sets = [
            (b[3], b[4], b[0], b[1], b[2])[:width]
            for b, m in zip(bumps, moved, strict=True)
            if m == minute
        ]
        for run in _chunks(sets):
            conn.execute(sql.append_bump_rows(len(run), minute), _flat(run))
    return results


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600) if it does not exist:
    SQLite would create it under the umask (usually world-readable), and gives its WAL and
    shared-memory files the database file's permissions."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass

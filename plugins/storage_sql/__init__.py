"""SQL storage (``[storage] backend = "sql"``): SQLite by default, PostgreSQL by URL.

The embedded default keeps everything in ``<server.data_dir>/kefu.db`` (SQLite
in WAL mode). Point ``[sql] url`` at PostgreSQL to run several processes or
machines on one database. See docs/storage.md for durability and tuning.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kefu.core.config import Section
from kefu.hooks import hookimpl

from .backend import SqlStorage

__all__ = ["SqlSettings", "SqlStorage", "async_url"]


class SqlSettings(Section):
    """``[sql]``: read at start-up only."""

    #: SQLAlchemy URL. ``sqlite:///path`` and ``postgresql://...`` get their async
    #: driver (aiosqlite, asyncpg) added. Default: SQLite at <server.data_dir>/kefu.db.
    url: str | None = None
    #: PostgreSQL only: keep kefu's tables in this schema (created when missing).
    pg_schema: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    #: Group commit: most appends one transaction may hold. 1 = one commit per message.
    batch_max: int = Field(256, ge=1, le=10_000)
    #: Group commit under load: once a batch is committed and more appends are already
    #: queued, the next batch waits this long (ms) to gather more. An append that finds
    #: the writer idle is committed at once. 0 = the next batch closes when the previous
    #: commit finishes (small batches: a commit, its page writes and fsync, for every
    #: few messages; docs/performance.md, 2026-12-04).
    batch_window_ms: float = Field(4.0, ge=0, le=100)
    #: SQLite only: "full" fsyncs the WAL at every commit (an ack survives power
    #: loss); "normal" survives a crash of kefu but not of the machine.
    sqlite_synchronous: Literal["full", "normal"] = "full"
    #: SQLite only: the writer connection's page cache (MiB). The append path touches
    #: index pages all over the file (one per conversation and per message id): with
    #: SQLite's 2 MiB default each miss is a read from the OS cache.
    sqlite_cache_mib: int = Field(64, ge=2, le=4096)
    #: SQLite only: milliseconds between the checkpointer thread's passive checkpoints
    #: (WAL pages copied back into the database beside the writer, not in its commits).
    #: 0 = SQLite's own automatic checkpoint inside the commit that crosses 1,000 pages.
    sqlite_checkpoint_ms: float = Field(200.0, ge=0, le=60_000)
    #: Connections kept open: SQLite, reader threads (one connection each; the one
    #: writer comes on top); PostgreSQL, the pool for reads and writes (appends have a
    #: connection of their own on top). No connection is opened past it: callers queue.
    pool_size: int = Field(5, ge=1, le=100)
    #: PostgreSQL only: how long a caller waits for a free connection before failing.
    pool_timeout_s: float = Field(30.0, gt=0, le=600)
    #: Log every SQL statement (debugging).
    echo: bool = False


def async_url(url: str) -> str:
    """Add the async driver to a URL that names none."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def make_backend(kernel) -> SqlStorage:
    settings: SqlSettings = kernel.config.section("sql")
    url = settings.url or f"sqlite:///{(kernel.data_dir / 'kefu.db').resolve()}"
    return SqlStorage(
        async_url(url),
        schema=settings.pg_schema,
        batch_max=settings.batch_max,
        batch_window=settings.batch_window_ms / 1000,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_cache_mib=settings.sqlite_cache_mib,
        sqlite_checkpoint_ms=settings.sqlite_checkpoint_ms,
        pool_size=settings.pool_size,
        pool_timeout=settings.pool_timeout_s,
        echo=settings.echo,
    )


@hookimpl
def kefu_config_schema():
    return {"sql": SqlSettings}


@hookimpl
def kefu_storage_backends():
    return {"sql": make_backend}


@hookimpl
def kefu_stats(kernel):
    storage = kernel.storage
    return storage.stats() if isinstance(storage, SqlStorage) else None

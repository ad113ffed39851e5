"""Fixtures for the storage contract suite: one ``store`` per backend, real services.

Every test in this folder that takes ``store`` or ``storage`` runs against
memory, SQLite, PostgreSQL and SecantusDB (a MongoDB wire-protocol server
started here, or the server at ``KEFU_MONGO_URL``). A missing service skips
locally and fails in CI. To run the suite against a new backend, add a maker
to ``MAKERS`` (see docs/storage.md).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from kefu.core.storage import StorageBackend
from tests.conftest import service_unavailable

POSTGRES_DSN = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Store:
    """A place to keep data and a way to open backends on it."""

    kind: str
    make: Callable[[], StorageBackend]  # a new, unopened backend over the same data
    durable: bool  # survives close() and a new backend opened on it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """``KEFU_MONGO_URL``, else a SecantusDB started for this test session."""
    if os.environ.get("KEFU_MONGO_URL"):
        url = os.environ["KEFU_MONGO_URL"]
        try:
            from pymongo import MongoClient

            with MongoClient(url, serverSelectionTimeoutMS=3000) as client:
                client.admin.command("ping")
        except Exception as exc:
            service_unavailable(f"MongoDB at KEFU_MONGO_URL ({exc})")
        yield url
        return
    try:
        import pymongo  # noqa: F401
        import secantus  # noqa: F401
    except ImportError as exc:
        service_unavailable(f"SecantusDB/pymongo ({exc})")
    port = _free_port()
    cmd = [sys.executable, "-m", "secantus", "--storage-path", ":memory:", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not _port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                service_unavailable(f"SecantusDB (did not start: {err.strip()})")
            time.sleep(0.05)
        yield f"mongodb://127.0.0.1:{port}/?directConnection=true"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        service_unavailable("asyncpg (pip install 'kefu[postgres]')")
    if not _port_open("127.0.0.1", 5432) and "127.0.0.1:5432" in POSTGRES_DSN:
        service_unavailable("PostgreSQL at 127.0.0.1:5432")
    return POSTGRES_DSN


async def _memory_store(request, tmp_path) -> AsyncIterator[Store]:
    from kefu.plugins.storage_memory import MemoryStorage

    shared = MemoryStorage()  # "reopening" memory gives the same (volatile) instance back
    yield Store("memory", lambda: shared, durable=False)


async def _sqlite_store(request, tmp_path) -> AsyncIterator[Store]:
    from kefu.plugins.storage_sql import SqlStorage

    url = f"sqlite+aiosqlite:///{tmp_path / 'kefu.db'}"
    yield Store("sqlite", lambda: SqlStorage(url), durable=True)


async def _postgres_store(request, tmp_path) -> AsyncIterator[Store]:
    import asyncpg

    from kefu.plugins.storage_sql import SqlStorage

    dsn = request.getfixturevalue("postgres_dsn")
    schema = f"kefu_test_{secrets.token_hex(6)}"  # one schema per test, dropped after
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        service_unavailable(f"PostgreSQL ({exc})")
    try:
        url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        yield Store("postgres", lambda: SqlStorage(url, schema=schema), durable=True)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _mongo_store(request, tmp_path) -> AsyncIterator[Store]:
    from pymongo import AsyncMongoClient

    from kefu.plugins.storage_mongo.backend import MongoStorage

    url = request.getfixturevalue("mongo_url")
    database = f"kefu_test_{secrets.token_hex(6)}"
    try:
        yield Store("mongo", lambda: MongoStorage(url, database), durable=True)
    finally:
        client: AsyncMongoClient = AsyncMongoClient(url)
        await client.drop_database(database)
        await client.close()


#: Backend name -> async generator of a :class:`Store`. Add yours here.
MAKERS = {
    "memory": _memory_store,
    "sqlite": _sqlite_store,
    "postgres": _postgres_store,
    "mongo": _mongo_store,
}


@pytest.fixture(params=sorted(MAKERS))
async def store(request, tmp_path) -> AsyncIterator[Store]:
    async for made in MAKERS[request.param](request, tmp_path):
        yield made


@pytest.fixture(params=sorted(set(MAKERS) - {"memory"}))
async def durable_store(request, tmp_path) -> AsyncIterator[Store]:
    """The backends that keep data across close and reopen (memory forgets, by design)."""
    async for made in MAKERS[request.param](request, tmp_path):
        yield made


@pytest.fixture
async def storage(store: Store) -> AsyncIterator[StorageBackend]:
    """An opened backend; closed after the test."""
    backend = store.make()
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()

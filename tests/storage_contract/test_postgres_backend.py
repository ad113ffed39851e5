"""What only the ``sql`` backend promises on PostgreSQL: a pool that queues and heals,
batches that fail message by message, visitor upserts in one statement."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from kefu.core.domain import Site, Visitor, new_id
from kefu.core.storage import StorageError
from kefu.plugins.storage_sql import SqlStorage
from tests.storage_contract.test_sql_backend import message, new_conversation


@pytest.fixture
async def pg(postgres_dsn) -> AsyncIterator[Callable]:
    """``await pg(**options)``: an opened SqlStorage in a schema of this test's own."""
    import asyncpg

    schema = f"kefu_test_{secrets.token_hex(6)}"
    url = postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    opened: list[SqlStorage] = []

    async def make(**options) -> SqlStorage:
        storage = SqlStorage(url, schema=schema, **options)
        await storage.open()
        opened.append(storage)
        return storage

    try:
        yield make
    finally:
        for storage in opened:
            await storage.close()
        conn = await asyncpg.connect(postgres_dsn, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_a_storm_of_reads_queues_for_the_pool_and_opens_no_more(pg):
    storage = await pg(pool_size=2)
    conv = await new_conversation(storage)
    await storage.append_message(message(conv, "c"))

    async def resume() -> None:
        assert (await storage.get_conversation(conv.site_id, conv.id)).last_seq == 1
        assert len(await storage.list_messages(conv.site_id, conv.id)) == 1

    await asyncio.gather(*(resume() for _ in range(300)))
    pool = storage._db._pool
    assert pool._opened <= 2 and len(pool._free) == pool._opened


async def test_a_caller_that_waits_too_long_for_a_connection_fails_cleanly(pg):
    storage = await pg(pool_size=1, pool_timeout=0.2)
    held = asyncio.ensure_future(storage._db.fetch_one("SELECT pg_sleep(1)", ()))
    await asyncio.sleep(0.05)
    with pytest.raises(StorageError, match="no database connection free within 0.2 s"):
        await storage.get_site("nope")
    await held
    assert await storage.get_site("nope") is None  # the pool is whole again


async def test_reads_heal_after_the_server_killed_their_connection(pg, postgres_dsn):
    import asyncpg

    storage = await pg(pool_size=1)
    conv = await new_conversation(storage)
    (pid,) = await storage._db.fetch_one("SELECT pg_backend_pid()", ())
    admin = await asyncpg.connect(postgres_dsn, timeout=5)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    assert (await storage.get_conversation(conv.site_id, conv.id)).id == conv.id
    (again,) = await storage._db.fetch_one("SELECT pg_backend_pid()", ())
    assert again != pid


async def test_a_message_the_database_refuses_fails_alone_in_its_batch(pg):
    storage = await pg()
    conv = await new_conversation(storage)
    sent = [message(conv, f"c{i}") for i in range(10)]
    sent.insert(4, message(conv, "x" * 200))  # longer than the cid column (128)
    results = await asyncio.gather(
        *(storage.append_message(m) for m in sent), return_exceptions=True
    )
    assert isinstance(results[4], StorageError)
    assert sorted(r[0].seq for i, r in enumerate(results) if i != 4) == list(range(1, 11))
    assert [m.seq for m in await storage.list_messages(conv.site_id, conv.id)] == list(range(1, 11))


async def test_concurrent_visitor_upserts_are_one_statement(pg):
    storage = await pg()
    site = await storage.create_site(Site(new_id(), "s", new_id()))
    first = await storage.upsert_visitor(Visitor("known", site.id, name="Old", created_at=1.0))
    batches = storage.visitor_upserts.batches
    sent = [Visitor(f"v{i}", site.id, name=f"n{i}", created_at=100.0 + i) for i in range(30)]
    sent += [Visitor("known", site.id, name=f"again{i}", created_at=50.0 + i) for i in range(3)]
    sent += [Visitor("twice", site.id, name=f"t{i}", created_at=60.0 + i) for i in range(2)]
    results = await asyncio.gather(*(storage.upsert_visitor(v) for v in sent))
    assert storage.visitor_upserts.batches - batches <= 3
    for visitor, stored in zip(sent, results, strict=True):
        assert stored.name == visitor.name  # each caller: what its own upsert stored
    assert {r.created_at for r in results if r.id == "known"} == {first.created_at}
    assert {r.created_at for r in results if r.id == "twice"} == {60.0}
    assert (await storage.get_visitor(site.id, "known")).name == "again2"
    assert (await storage.get_visitor(site.id, "twice")).name == "t1"
    assert (await storage.get_visitor(site.id, "v7")).created_at == 107.0

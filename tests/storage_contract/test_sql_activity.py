"""The listing indexes hold ``active_at``, the minute of ``updated_at`` (tables.activity_minute):
an append moves them only when that minute changes, listings still come newest ``updated_at``
first and page by ``before`` exactly, and a database of an older kefu (indexes on
``updated_at``, no ``active_at``) is migrated at open: the column filled in, the old indexes
dropped (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3

from kefu.core.domain import Conversation, Message, Site, new_id
from kefu.core.storage import ConversationFilter
from kefu.plugins.storage_sql import SqlStorage
from kefu.plugins.storage_sql.tables import RETIRED_INDEXES, activity_minute
from tests.storage_contract.test_postgres_backend import pg  # noqa: F401 (a fixture)

T0 = 1_800_000_000.0  # a minute's start: 30,000,000 minutes since the epoch

#: updated_at of the conversations listed: minute starts, ends, inside; out of order
TIMES = [T0 + 59.999, T0, T0 - 0.001, T0 + 60, T0 + 120.5, T0 + 61, T0 - 59.5, T0 + 30]


def test_the_minute_is_monotone_and_exact_at_its_edges():
    assert activity_minute(T0) == T0
    assert activity_minute(T0 + 59.999) == T0
    assert activity_minute(T0 - 0.001) == T0 - 60
    ordered = sorted(TIMES)
    minutes = [activity_minute(t) for t in ordered]
    assert minutes == sorted(minutes)


async def _fill(storage: SqlStorage) -> tuple[str, dict[str, float]]:
    site = await storage.create_site(Site(new_id(), "s", new_id()))
    times = {}
    for i, at in enumerate(TIMES):
        conv = Conversation(new_id(), site.id, visitor_id=f"v{i}", created_at=at, updated_at=at)
        await storage.create_conversation(conv)
        times[conv.id] = at
    return site.id, times


async def _check_listing(storage: SqlStorage, site_id: str, times: dict[str, float]) -> None:
    expected = sorted(times, key=lambda c: (times[c], c), reverse=True)
    listed = await storage.list_conversations(site_id, limit=100)
    assert [c.id for c in listed] == expected
    paged: list[str] = []
    before = None
    while True:  # pages of 3 by ``before``: the same order, each once
        page = await storage.list_conversations(site_id, limit=3, before=before)
        paged += [c.id for c in page]
        if len(page) < 3:
            break
        before = page[-1].updated_at
    assert paged == expected
    # the search interface's listing pages the same way
    found = await storage.find_conversations(site_id, ConversationFilter(), limit=100)
    assert [c.id for c in found] == expected
    paged, before = [], None
    while page := await storage.find_conversations(
        site_id, ConversationFilter(), limit=3, before=before
    ):
        paged += [c.id for c in page]
        before = page[-1].updated_at
    assert paged == expected


async def _minutes(fetch, site_id: str) -> dict[str, tuple[float, float]]:
    return {r[0]: (r[1], r[2]) for r in await fetch(site_id)}


async def test_sqlite_appends_move_the_minute_only_when_it_changes(tmp_path):
    path = tmp_path / "kefu.db"
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    try:
        site_id, times = await _fill(storage)
        await _check_listing(storage, site_id, times)
        first = next(iter(times))  # updated_at T0 + 59.999
        for cid, at in (("a", T0 + 59.9995), ("b", T0 + 61.0)):
            await storage.append_message(
                Message(site_id, first, cid, "visitor", "v0", text="hi", created_at=at)
            )
            with sqlite3.connect(path) as db:
                row = db.execute(
                    "SELECT updated_at, active_at FROM conversations WHERE id = ?", (first,)
                ).fetchone()
            assert row == (at, activity_minute(at))
            times[first] = at
            await _check_listing(storage, site_id, times)
    finally:
        await storage.close()


async def test_sqlite_database_with_the_old_listing_indexes(tmp_path):
    path = tmp_path / "kefu.db"
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    site_id, times = await _fill(storage)
    await storage.close()
    with sqlite3.connect(path) as db:  # as kefu before active_at left it
        for name in [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")]:
            if name.endswith("_active"):
                db.execute(f"DROP INDEX {name}")
        db.execute("ALTER TABLE conversations DROP COLUMN active_at")
        for name in RETIRED_INDEXES["conversations"]:
            db.execute(f"CREATE INDEX {name} ON conversations (site_id, updated_at)")
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    try:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT id, updated_at, active_at FROM conversations").fetchall()
            indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert {r[0]: r[2] for r in rows} == {c: activity_minute(t) for c, t in times.items()}
        assert not indexes & set(RETIRED_INDEXES["conversations"])
        assert "conversations_site_state_active" in indexes
        await _check_listing(storage, site_id, times)
    finally:
        await storage.close()


async def test_postgres_migration_and_listing(pg):  # noqa: F811
    import asyncpg

    storage = await pg()
    site_id, times = await _fill(storage)
    await _check_listing(storage, site_id, times)
    schema = storage.schema
    dsn = storage.url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'ALTER TABLE "{schema}".conversations DROP COLUMN active_at')
        for name in RETIRED_INDEXES["conversations"]:
            await conn.execute(
                f'CREATE INDEX {name} ON "{schema}".conversations (site_id, updated_at)'
            )
        again = await pg()
        rows = await conn.fetch(f'SELECT id, active_at FROM "{schema}".conversations')
        assert {r[0]: r[1] for r in rows} == {c: activity_minute(t) for c, t in times.items()}
        left = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema)
        assert not {r[0] for r in left} & set(RETIRED_INDEXES["conversations"])
        await _check_listing(again, site_id, times)
        first = next(iter(times))
        at = T0 + 65.0
        await again.append_message(
            Message(site_id, first, "c", "visitor", "v0", text="hi", created_at=at)
        )
        row = await conn.fetchrow(
            f'SELECT updated_at, active_at FROM "{schema}".conversations WHERE id = $1', first
        )
        assert (row[0], row[1]) == (at, activity_minute(at))
        times[first] = at
        await _check_listing(again, site_id, times)
    finally:
        await conn.close()


async def test_sqlite_a_batch_reads_the_heads_back_exactly_and_numbers_every_run(tmp_path):
    """The writer reads a batch's conversations as one JSON row and writes it as multi-row
    statements of power-of-two runs (sqlite._flush_appends): an ``updated_at`` that an
    append does not move reads back to the same float, and a batch that is no power of two
    (300 = 256 + 32 + 8 + 4 messages, 37 conversations) numbers every message once."""
    storage = SqlStorage(f"sqlite:///{tmp_path / 'kefu.db'}")
    await storage.open()
    try:
        site = await storage.create_site(Site(new_id(), "s", new_id()))
        awkward = [T0 + 0.1 + i / 7 + 1e-7 for i in range(37)]  # 17 significant digits
        convs = []
        for i, at in enumerate(awkward):
            conv = Conversation(new_id(), site.id, visitor_id=f"v{i}", created_at=at, updated_at=at)
            convs.append(await storage.create_conversation(conv))
        sends = [
            Message(site.id, convs[i % 37].id, f"c{i}", "visitor", "v", text="x", created_at=T0)
            for i in range(300)
        ]
        stored = await asyncio.gather(*(storage.append_message(m) for m in sends))
        assert all(created for _, created in stored)
        by_conv: dict[str, list[int]] = {}
        for message, _ in stored:
            by_conv.setdefault(message.conversation_id, []).append(message.seq)
        for conv, at in zip(convs, awkward, strict=True):
            seqs = sorted(by_conv[conv.id])
            assert seqs == list(range(1, len(seqs) + 1))
            after = await storage.get_conversation(site.id, conv.id)
            assert after.last_seq == len(seqs)
            assert after.updated_at == at  # T0 is older: the head's float, exactly
    finally:
        await storage.close()

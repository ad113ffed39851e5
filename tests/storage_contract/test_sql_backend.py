"""What only the ``sql`` backend promises on SQLite: group commit, one writer thread that
shares commits, a fixed pool of readers, SQLite settings, crash durability."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from kefu.core.domain import Conversation, Message, Site, Visitor, new_id
from kefu.core.kernel import load_kernel
from kefu.core.storage import DuplicateError, StorageError
from kefu.plugins.storage_sql import SqlStorage, async_url
from kefu.plugins.storage_sql.tables import TABLES

WRITER = Path(__file__).with_name("crash_writer.py")


async def opened(path: Path, **kw) -> SqlStorage:
    storage = SqlStorage(f"sqlite+aiosqlite:///{path}", **kw)
    await storage.open()
    return storage


async def new_conversation(storage: SqlStorage) -> Conversation:
    site = await storage.create_site(Site(new_id(), "s", new_id()))
    return await storage.create_conversation(Conversation(new_id(), site.id, visitor_id="v"))


def message(conv: Conversation, cid: str, text: str = "") -> Message:
    return Message(conv.site_id, conv.id, cid, "visitor", "v", text=text)


async def test_concurrent_appends_share_commits(tmp_path):
    storage = await opened(tmp_path / "kefu.db")
    try:
        conv = await new_conversation(storage)
        results = await asyncio.gather(
            *(storage.append_message(message(conv, f"c{i}")) for i in range(200))
        )
        assert sorted(m.seq for m, _ in results) == list(range(1, 201))
        assert storage.appender.items == 200
        assert storage.appender.batches <= 20  # typically 2: the first arrival, then the rest
    finally:
        await storage.close()


async def test_batch_max_1_turns_group_commit_off(tmp_path):
    storage = await opened(tmp_path / "kefu.db", batch_max=1)
    try:
        conv = await new_conversation(storage)
        results = await asyncio.gather(
            *(storage.append_message(message(conv, f"c{i}")) for i in range(30))
        )
        assert sorted(m.seq for m, _ in results) == list(range(1, 31))
        assert storage.appender.batches == 30
    finally:
        await storage.close()


PRAGMAS = ("journal_mode", "synchronous", "busy_timeout")


@pytest.mark.parametrize(("setting", "expected"), [("full", 2), ("normal", 1)])
async def test_sqlite_runs_in_wal_mode_with_the_chosen_synchronous(tmp_path, setting, expected):
    storage = await opened(tmp_path / "kefu.db", sqlite_synchronous=setting)
    try:
        db = storage._db
        # the writer, whose commits are the durable ones
        pragmas = await db.write(
            lambda conn: [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in PRAGMAS]
        )
        assert pragmas == ["wal", expected, 10000]
        assert await db.write(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0]) == (
            -64 * 1024  # the writer's page cache, [sql] sqlite_cache_mib
        )
        for _ in range(20):  # reads land on whichever reader is free: each must agree
            rows = [await db.fetch_one(f"PRAGMA {p}", ()) for p in PRAGMAS]
            assert [row[0] for row in rows] == ["wal", expected, 10000]
    finally:
        await storage.close()


@pytest.mark.parametrize("interval_ms", [50.0, 0.0])
async def test_the_checkpointer_copies_the_wal_back_beside_the_writer(tmp_path, interval_ms):
    """With ``sqlite_checkpoint_ms`` the WAL is copied back into the database by the
    checkpointer thread, not by the writer's commits (whose own automatic checkpoint is
    only a backstop); with 0, SQLite's automatic checkpoint stays the writer's."""
    from kefu.plugins.storage_sql.sqlite import BACKSTOP_PAGES

    path = tmp_path / "kefu.db"
    storage = await opened(path, sqlite_checkpoint_ms=interval_ms)
    try:
        db = storage._db
        autocheckpoint = await db.write(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert autocheckpoint == (BACKSTOP_PAGES if interval_ms else 1000)
        conv = await new_conversation(storage)
        await asyncio.gather(
            *(storage.append_message(message(conv, f"c{i}", "x" * 200)) for i in range(300))
        )  # some hundred pages: under SQLite's own 1,000-page mark
        for _ in range(100):  # the checkpointer's next turn (50 ms)
            if db.checkpoints and db.wal_pages:
                break
            await asyncio.sleep(0.05)
        copied = path.stat().st_size  # the database file: what checkpoints copied into it
        if interval_ms:
            assert db.checkpoints >= 1 and db.wal_pages > 0
            assert copied > 300 * 200  # the 300 messages' text is in the file
        else:
            assert db.checkpoints == 0
            assert copied < 300 * 200  # still only in the WAL
        assert (
            path.with_name("kefu.db-wal").stat().st_size > 300 * 200
        )  # the WAL is kept (not truncated)
    finally:
        await storage.close()


async def test_closed_storage_refuses_appends(tmp_path):
    storage = await opened(tmp_path / "kefu.db")
    conv = await new_conversation(storage)
    await storage.close()
    with pytest.raises(Exception, match="closed"):
        await storage.append_message(message(conv, "late"))


async def test_acknowledged_appends_survive_sigkill(tmp_path):
    db = tmp_path / "kefu.db"
    storage = await opened(db)
    conv = await new_conversation(storage)
    await storage.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, str(WRITER), str(db), conv.site_id, conv.id, "20"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    acked: dict[str, int] = {}

    def record(line: bytes) -> None:
        if line.startswith(b"ACK "):
            _, seq, cid = line.decode().split()
            acked[cid] = int(seq)

    killed = False
    try:
        async with asyncio.timeout(30):
            while len(acked) < 400 and (line := await proc.stdout.readline()):
                record(line)
        if proc.returncode is None:  # mid-flight: more appends are queued and running
            proc.send_signal(signal.SIGKILL)
            killed = True
        for line in (await proc.stdout.read()).splitlines():
            record(line)
    finally:
        # One signal only: a second one, sent before asyncio saw the exit, makes
        # Popen.send_signal reap the child behind asyncio's watcher (returncode 255).
        if proc.returncode is None and not killed:
            proc.kill()
        await proc.wait()
    assert proc.stderr is not None
    child_err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
    assert proc.returncode == -signal.SIGKILL, f"the writer died by itself:\n{child_err}"
    assert len(acked) >= 400, f"the writer acknowledged only {len(acked)}:\n{child_err}"

    storage = await opened(db)
    try:
        stored = await storage.list_messages(conv.site_id, conv.id, limit=1_000_000)
        by_cid = {m.cid: m.seq for m in stored}
        assert {cid: by_cid.get(cid) for cid in acked} == acked  # every ack, same seq
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        assert len(by_cid) == len(stored)
        head = await storage.get_conversation(conv.site_id, conv.id)
        assert head.last_seq == len(stored)
        again, created = await storage.append_message(message(conv, "after-restart"))
        assert created and again.seq == len(stored) + 1
    finally:
        await storage.close()


async def test_sql_is_the_default_backend_and_lives_in_the_data_dir(write_config, tmp_path):
    path = write_config(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    kernel = load_kernel(path, environ={})
    assert kernel.config.storage.backend == "sql"
    storage = kernel.make_storage()
    assert isinstance(storage, SqlStorage)
    await storage.open()
    try:
        await storage.create_site(Site(new_id(), "s", new_id()))
    finally:
        await storage.close()
    assert (tmp_path / "data" / "kefu.db").exists()


def test_plain_urls_get_their_async_driver():
    assert async_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("sqlite+aiosqlite:///:memory:", "in-memory SQLite is not supported"),
        ("postgresql+nosuchdriver://u@h/db", "bad \\[sql\\] url"),
        ("not a url", "bad \\[sql\\] url"),
    ],
)
async def test_unusable_urls_fail_at_open_with_a_clear_error(url, expect):
    with pytest.raises(StorageError, match=expect):
        await SqlStorage(url).open()


async def test_concurrent_writes_of_any_kind_share_one_commit(tmp_path):
    storage = await opened(tmp_path / "kefu.db")
    try:
        conv = await new_conversation(storage)
        before = storage._db.transactions
        writes = [storage.upsert_visitor(Visitor(f"v{i}", conv.site_id)) for i in range(40)]
        writes += [
            storage.create_conversation(Conversation(new_id(), conv.site_id, f"v{i}"))
            for i in range(40)
        ]
        writes += [storage.append_message(message(conv, f"c{i}")) for i in range(40)]
        done = await asyncio.gather(*writes)
        assert len(done) == 120
        assert storage._db.transactions - before <= 10  # typically 2 or 3
        assert len(await storage.list_conversations(conv.site_id, limit=100)) == 41
        assert (await storage.get_conversation(conv.site_id, conv.id)).last_seq == 40
    finally:
        await storage.close()


async def test_a_failing_write_fails_alone_in_a_shared_commit(tmp_path):
    storage = await opened(tmp_path / "kefu.db")
    try:
        taken = await storage.create_site(Site(new_id(), "taken", "key-taken"))
        sites = [Site(new_id(), f"s{i}", f"key-{i}") for i in range(20)]
        clash = Site(new_id(), "clash", "key-taken")  # widget key already used
        results = await asyncio.gather(
            *(storage.create_site(s) for s in [*sites[:10], clash, *sites[10:]]),
            return_exceptions=True,
        )
        assert isinstance(results[10], DuplicateError)
        assert all(isinstance(r, Site) for i, r in enumerate(results) if i != 10)
        stored = {s.id for s in await storage.list_sites()}
        assert stored == {taken.id, *(s.id for s in sites)}
    finally:
        await storage.close()


async def test_reads_never_open_connections_past_the_pool(tmp_path):
    storage = await opened(tmp_path / "kefu.db", pool_size=3)
    try:
        conv = await new_conversation(storage)
        await storage.append_message(message(conv, "c"))
        threads = {t.ident for t in threading.enumerate()}

        async def resume() -> None:
            assert (await storage.get_conversation(conv.site_id, conv.id)).last_seq == 1
            assert len(await storage.list_messages(conv.site_id, conv.id)) == 1

        await asyncio.gather(*(resume() for _ in range(300)))  # a storm: 600 reads at once
        readers = [t for t in threading.enumerate() if t.name.startswith("kefu-sqlite-reader")]
        assert len(readers) == 3
        new = {t.ident for t in threading.enumerate()} - threads
        assert not [t for t in threading.enumerate() if t.ident in new and "sqlite" in t.name]
    finally:
        await storage.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("kefu-sqlite")]


async def test_a_batch_of_appends_is_one_write_transaction(tmp_path):
    storage = await opened(tmp_path / "kefu.db")
    try:
        convs = [await new_conversation(storage) for _ in range(5)]
        before = storage._db.transactions
        sent = [message(c, f"c{i}") for i in range(50) for c in convs]
        results = await asyncio.gather(*(storage.append_message(m) for m in sent))
        assert storage._db.transactions - before <= 3  # the first arrival, then the rest
        for conv in convs:
            seqs = sorted(m.seq for m, _ in results if m.conversation_id == conv.id)
            assert seqs == list(range(1, 51))
    finally:
        await storage.close()


def test_every_record_field_has_its_column():
    for cls, (table, codec) in TABLES.items():
        assert set(codec.columns) == set(table.c.keys()), cls.__name__


async def test_echo_logs_each_statement(tmp_path, caplog):
    storage = await opened(tmp_path / "kefu.db", echo=True)
    try:
        with caplog.at_level(logging.INFO, logger="kefu.plugins.storage_sql.backend"):
            conv = await new_conversation(storage)
            assert await storage.get_conversation(conv.site_id, conv.id) == conv
        assert any("SELECT" in r.getMessage() for r in caplog.records)
        assert any("INSERT" in r.getMessage() for r in caplog.records)
    finally:
        await storage.close()


async def test_a_search_with_nothing_queued_takes_no_write_transaction(tmp_path):
    """The search-time catch-up reads the queue first: an empty one costs no commit."""
    storage = await opened(tmp_path / "kefu.db")
    try:
        conv = await new_conversation(storage)
        await storage.append_message(message(conv, "c1", text="where is my parcel"))
        before = storage._db.transactions
        found = await storage.search_messages(conv.site_id, "parcel")
        assert [m.cid for m in found] == ["c1"]  # acknowledged before: indexed first
        assert storage._db.transactions - before >= 1
        before = storage._db.transactions
        for _ in range(3):
            assert [m.cid for m in await storage.search_messages(conv.site_id, "parcel")]
        assert storage._db.transactions == before
        await storage.append_message(message(conv, "c2", text="my parcel again"))
        found = await storage.search_messages(conv.site_id, "parcel")
        assert sorted(m.cid for m in found) == ["c1", "c2"]
    finally:
        await storage.close()

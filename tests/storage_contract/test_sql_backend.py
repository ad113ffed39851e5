"""What only the ``sql`` backend promises: group commit, SQLite settings, crash durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from kefu.core.domain import Conversation, Message, Site, new_id
from kefu.core.kernel import load_kernel
from kefu.core.storage import StorageError
from kefu.plugins.storage_sql import SqlStorage, async_url

WRITER = Path(__file__).with_name("crash_writer.py")


async def opened(path: Path, **kw) -> SqlStorage:
    storage = SqlStorage(f"sqlite+aiosqlite:///{path}", **kw)
    await storage.open()
    return storage


async def new_conversation(storage: SqlStorage) -> Conversation:
    site = await storage.create_site(Site(new_id(), "s", new_id()))
    return await storage.create_conversation(Conversation(new_id(), site.id, visitor_id="v"))


def message(conv: Conversation, cid: str) -> Message:
    return Message(conv.site_id, conv.id, cid, "visitor", "v")


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


@pytest.mark.parametrize(("setting", "expected"), [("full", 2), ("normal", 1)])
async def test_sqlite_runs_in_wal_mode_with_the_chosen_synchronous(tmp_path, setting, expected):
    storage = await opened(tmp_path / "kefu.db", sqlite_synchronous=setting)
    try:
        async with storage._read() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == expected
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

    try:
        async with asyncio.timeout(30):
            while len(acked) < 400 and (line := await proc.stdout.readline()):
                record(line)
        if proc.returncode is None:  # mid-flight: more appends are queued and running
            proc.send_signal(signal.SIGKILL)
        for line in (await proc.stdout.read()).splitlines():
            record(line)
    finally:
        if proc.returncode is None:
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

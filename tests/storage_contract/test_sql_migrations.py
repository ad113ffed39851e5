"""A database made by an older kefu opens: missing columns are added, and a guarantee its
data breaks is logged instead of refusing to start (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import sqlite3

from kefu.core.domain import RESOLVED, Conversation, Site, new_id
from kefu.core.storage import DuplicateError
from kefu.plugins.storage_sql import SqlStorage
from tests.storage_contract.test_postgres_backend import pg  # noqa: F401 (a fixture)

OLD = [
    "DROP INDEX {p}conversations_one_open",
    "ALTER TABLE {p}conversations DROP COLUMN version",
]


async def _two_open(storage: SqlStorage) -> tuple[str, str]:
    site = await storage.create_site(Site(new_id(), "s", new_id()))
    await storage.create_conversation(Conversation(new_id(), site.id, visitor_id="v"))
    return site.id, "v"


async def _check_reopened(storage: SqlStorage, site_id: str, caplog) -> None:
    assert "conversations_one_open" in caplog.text  # told, not refused
    listed = await storage.list_conversations(site_id, visitor_id="v")
    assert len(listed) == 2 and all(c.version == 0 for c in listed)
    first = listed[0]
    first.meta = {"k": 1}
    assert await storage.update_conversation(first, if_version=0)
    assert (await storage.get_conversation(site_id, first.id)).version == 1
    # the guarantee holds once the duplicates are resolved and the index is there again
    for conv in listed:
        conv.state = RESOLVED
        assert await storage.update_conversation(conv)


async def test_sqlite_database_of_an_older_kefu(tmp_path, caplog):
    path = tmp_path / "kefu.db"
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    site_id, _ = await _two_open(storage)
    await storage.close()
    with sqlite3.connect(path) as db:  # as an older kefu left it, with two open conversations
        for statement in OLD:
            db.execute(statement.format(p=""))
        db.execute(
            "INSERT INTO conversations (site_id, id, visitor_id, state, priority, last_seq, "
            "tags, meta, created_at, updated_at) VALUES (?, ?, 'v', 'queued', 0, 0, '[]', "
            "'{}', 1, 1)",
            (site_id, new_id()),
        )
    caplog.set_level(logging.ERROR)
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    try:
        await _check_reopened(storage, site_id, caplog)
    finally:
        await storage.close()
    reopened = SqlStorage(f"sqlite:///{path}")  # now the index can be made
    await reopened.open()
    try:
        await reopened.create_conversation(Conversation(new_id(), site_id, visitor_id="v"))
        try:
            await reopened.create_conversation(Conversation(new_id(), site_id, visitor_id="v"))
        except DuplicateError:
            pass
        else:
            raise AssertionError("the one-open index was not created on reopen")
    finally:
        await reopened.close()


async def test_postgres_database_of_an_older_kefu(pg, caplog):  # noqa: F811
    import asyncpg

    storage = await pg()
    site_id, _ = await _two_open(storage)
    schema = storage.schema
    dsn = storage.url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        for statement in OLD:
            await conn.execute(statement.format(p=f'"{schema}".'))
        await conn.execute(
            f'INSERT INTO "{schema}".conversations (site_id, id, visitor_id, state, priority, '
            "last_seq, tags, meta, created_at, updated_at) VALUES ($1, $2, 'v', 'queued', 0, 0, "
            "'[]', '{}', 1, 1)",
            site_id,
            new_id(),
        )
    finally:
        await conn.close()
    caplog.set_level(logging.ERROR)
    again = await pg()
    await _check_reopened(again, site_id, caplog)


async def test_sqlite_search_index_of_an_older_kefu(tmp_path):
    """An index kept by triggers on every append (kefu before the queue) is taken over as is."""
    from tests.storage_contract.test_search_contract import chat

    path = tmp_path / "kefu.db"
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    await storage.close()
    insert = "INSERT INTO messages_fts(rowid, text) VALUES (new.rowid, new.text);"
    delete = (
        "INSERT INTO messages_fts(messages_fts, rowid, text) "
        "VALUES ('delete', old.rowid, old.text);"
    )
    with sqlite3.connect(path) as db:  # as an older kefu left it, with one message indexed
        for name in ("messages_fts_queue", "messages_fts_unindex", "messages_fts_reindex"):
            db.execute(f"DROP TRIGGER {name}")
        db.execute("DROP TABLE messages_fts_pending")
        for name, event, body in (
            ("messages_fts_insert", "AFTER INSERT", insert),
            ("messages_fts_delete", "AFTER DELETE", delete),
            ("messages_fts_update", "AFTER UPDATE OF text", delete + " " + insert),
        ):
            db.execute(f"CREATE TRIGGER {name} {event} ON messages BEGIN {body} END")
        db.execute(
            "INSERT INTO messages (site_id, conversation_id, seq, cid, sender_kind, sender_id, "
            "type, text, meta, created_at) VALUES ('s1', 'c1', 1, 'x1', 'visitor', 'v', "
            "'text', 'an older needle', '{}', 1)"
        )
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    try:
        with sqlite3.connect(path) as db:
            listed = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            triggers = {row[0] for row in listed}
        assert not triggers & {"messages_fts_insert", "messages_fts_delete", "messages_fts_update"}
        found = await storage.search_messages("s1", "needle")
        assert [m.text for m in found] == ["an older needle"]
        await chat(storage, "s1", ["a newer needle"], t0=2000)
        found = await storage.search_messages("s1", "needle")
        assert [m.text for m in found] == ["a newer needle", "an older needle"]
        assert await storage.redact_message("s1", "c1", 1, text="", meta={})
        assert [m.text for m in await storage.search_messages("s1", "needle")] == ["a newer needle"]
    finally:
        await storage.close()


async def test_sqlite_blobs_of_an_older_kefu_get_an_owner(tmp_path):
    path = tmp_path / "kefu.db"
    storage = SqlStorage(f"sqlite:///{path}")
    await storage.open()
    await storage.put_blob("s1", "old", b"bytes", mime="text/plain")
    await storage.close()
    with sqlite3.connect(path) as db:  # blobs as kefu kept them before uploaders were recorded
        db.execute("DROP INDEX blobs_site_owner")
        db.execute("ALTER TABLE blobs DROP COLUMN owner")
    reopened = SqlStorage(f"sqlite:///{path}")
    await reopened.open()
    try:
        assert (await reopened.blob_info("s1", "old")).owner == ""
        await reopened.put_blob("s1", "new", b"x", mime="text/plain", owner="visitor:v")
        assert await reopened.owned_blobs("s1", "visitor:v") == ["new"]
    finally:
        await reopened.close()

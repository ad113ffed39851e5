"""One group commit of ``append_message`` calls, inside the caller's transaction.

For a batch of messages, possibly for many conversations and possibly
repeating a ``cid``:

1. read (on PostgreSQL: lock, ``FOR UPDATE``, in key order so two processes
   cannot deadlock) the batch's conversations, scoped by ``site_id``;
2. read the messages already stored under the batch's cids;
3. give every new message ``last_seq + 1``, ``+ 2`` ... in arrival order; a
   cid already stored, or seen earlier in the batch, gets that message back;
4. one multi-row INSERT, one executemany UPDATE of ``last_seq`` / ``updated_at``.

Holding the conversation row lock from step 1 to the commit is what makes
steps 2-3 safe across processes: no other transaction can add a message to
those conversations in between. (On SQLite the whole database is locked by
``BEGIN IMMEDIATE`` already.)
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kefu.core.domain import Message
from kefu.core.storage import StorageError

from .tables import conversations, from_row, messages, to_row

Key = tuple[str, str]  # (site_id, conversation_id)


async def flush(
    conn: AsyncConnection, batch: list[Message], *, lock_rows: bool
) -> list[tuple[Message, bool] | Exception]:
    """Store ``batch`` in ``conn``'s open transaction; one result per message."""
    keys = sorted({(m.site_id, m.conversation_id) for m in batch})
    c = conversations.c
    stmt = (
        select(c.site_id, c.id, c.last_seq, c.updated_at)
        .where(tuple_(c.site_id, c.id).in_(keys))
        .order_by(c.site_id, c.id)
    )
    if lock_rows:
        stmt = stmt.with_for_update()
    heads = {(r.site_id, r.id): [r.last_seq, r.updated_at] for r in await conn.execute(stmt)}

    m = messages.c
    wanted = [(msg.site_id, msg.conversation_id, msg.cid) for msg in batch]
    found = await conn.execute(
        select(messages).where(tuple_(m.site_id, m.conversation_id, m.cid).in_(wanted))
    )
    by_cid: dict[tuple[str, str, str], tuple[Message, bool]] = {}
    for row in found:
        stored = from_row(Message, row)
        by_cid[stored.site_id, stored.conversation_id, stored.cid] = (stored, False)

    results: list[tuple[Message, bool] | Exception] = []
    rows = []
    for msg in batch:
        key = (msg.site_id, msg.conversation_id, msg.cid)
        head = heads.get(key[:2])
        if head is None:
            results.append(StorageError(f"conversation {msg.conversation_id!r} not found"))
        elif key in by_cid:
            stored, _ = by_cid[key]
            results.append((stored, False))
        else:
            head[0] += 1
            head[1] = max(head[1], msg.created_at)
            stored = dataclasses.replace(msg, seq=head[0])
            by_cid[key] = (stored, True)
            results.append((stored, True))
            rows.append(to_row(stored))
    if rows:
        await conn.execute(insert(messages), rows)
        touched = {(r["site_id"], r["conversation_id"]) for r in rows}
        await conn.execute(
            update(conversations)
            .where(c.site_id == bindparam("k_site"), c.id == bindparam("k_id"))
            .values(last_seq=bindparam("k_seq"), updated_at=bindparam("k_updated")),
            [
                {"k_site": s, "k_id": i, "k_seq": heads[s, i][0], "k_updated": heads[s, i][1]}
                for s, i in sorted(touched)
            ],
        )
    return results

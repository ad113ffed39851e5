"""Gap-free ``seq`` on MongoDB without transactions: optimistic inserts under unique indexes.

A message's ``seq`` exists only if the message does: the unique index on
``(site_id, conversation_id, seq)`` lets exactly one writer take each number,
and the unique index on ``(site_id, conversation_id, cid)`` lets a cid be
stored once. A counter bumped with ``$inc`` before the insert would leave a
hole whenever the insert then fails (a cid re-sent to two processes at once,
a connection lost in between), and a client that tracks ``seq`` would wait
for that hole forever; this scheme has no such window and works on a
standalone server, where MongoDB has no multi-document transactions.

For one conversation's part of a group commit:

1. read the conversation (``last_seq``) and the messages already stored
   under the batch's cids;
2. number the new messages ``last_seq + 1 ...`` and ``insert_many`` them in
   order; all of them usually go in with one round trip;
3. on a duplicate key the insert stops at that message: a taken cid means
   another process stored it first (return that one); a taken seq means
   another process appended, so re-read the highest ``seq`` and number the
   rest again;
4. move the conversation's ``last_seq`` / ``updated_at`` forward with ``$max``.

If a process dies between 2 and 4, ``last_seq`` lags behind the messages
until the next append, whose insert then meets a taken seq and catches up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import BulkWriteError

from kefu.core.domain import Message
from kefu.core.storage import StorageError

from .records import from_doc, to_doc

DUPLICATE_KEY = 11000
MAX_ROUNDS = 50


async def append_to_conversation(
    db: Any, site_id: str, conversation_id: str, batch: list[Message]
) -> list[tuple[Message, bool] | Exception]:
    """Store one conversation's share of a batch; one result per message, in order."""
    scope = {"site_id": site_id, "conversation_id": conversation_id}
    head = await db.conversations.find_one(
        {"site_id": site_id, "id": conversation_id}, {"last_seq": 1, "updated_at": 1}
    )
    if head is None:
        error = StorageError(f"conversation {conversation_id!r} not found")
        return [error] * len(batch)
    last_seq, updated_at = head["last_seq"], head["updated_at"]

    done: dict[str, tuple[Message, bool]] = {}
    async for doc in db.messages.find({**scope, "cid": {"$in": [m.cid for m in batch]}}):
        done[doc["cid"]] = (from_doc(Message, doc), False)

    todo = [m for m in _first_per_cid(batch) if m.cid not in done]
    for _ in range(MAX_ROUNDS):
        if not todo:
            break
        numbered = [dataclasses.replace(m, seq=last_seq + i) for i, m in enumerate(todo, 1)]
        try:
            await db.messages.insert_many([to_doc(m) for m in numbered], ordered=True)
            inserted, failed = len(numbered), None
        except BulkWriteError as exc:
            inserted = exc.details.get("nInserted", 0)
            errors = exc.details.get("writeErrors", [])
            failed = errors[0] if errors else None
            if failed is None or failed.get("code") != DUPLICATE_KEY:
                raise StorageError(f"append messages: {exc.details}") from exc
        for m in numbered[:inserted]:
            done[m.cid] = (m, True)
            updated_at = max(updated_at, m.created_at)
        last_seq += inserted
        todo = todo[inserted:]
        if failed is not None:
            clash = todo[0]
            other = await db.messages.find_one({**scope, "cid": clash.cid})
            if other is not None:  # this cid was stored meanwhile: the same message
                done[clash.cid] = (from_doc(Message, other), False)
                todo = todo[1:]
            newest = await db.messages.find_one(scope, {"seq": 1}, sort=[("seq", DESCENDING)])
            last_seq = max(last_seq, newest["seq"] if newest else 0)
    else:
        raise StorageError(f"append messages: seq contention on {conversation_id!r} persisted")

    await db.conversations.update_one(
        {"site_id": site_id, "id": conversation_id},
        {"$max": {"last_seq": last_seq, "updated_at": updated_at}},
    )
    results: list[tuple[Message, bool] | Exception] = []
    answered: set[str] = set()
    for m in batch:  # a cid repeated inside the batch: stored once, "created" once
        stored, created = done[m.cid]
        results.append((stored, created and m.cid not in answered))
        answered.add(m.cid)
    return results


def _first_per_cid(batch: list[Message]) -> list[Message]:
    seen: dict[str, Message] = {}
    for m in batch:
        seen.setdefault(m.cid, m)
    return list(seen.values())

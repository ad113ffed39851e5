"""One group commit of ``append_message`` calls: the numbering, shared by both drivers.

For a batch of messages, possibly for many conversations and possibly
repeating a ``cid``, a driver runs, in one transaction:

1. read (on PostgreSQL: lock, ``FOR UPDATE``, in key order so two processes
   cannot deadlock) the batch's conversations, scoped by ``site_id``;
2. read the messages already stored under the batch's cids;
3. :func:`number`: give every new message ``last_seq + 1``, ``+ 2`` ... in
   arrival order; a cid already stored, or seen earlier in the batch, gets
   that message back;
4. one multi-row INSERT and one bulk UPDATE of ``last_seq`` / ``updated_at``
   (on SQLite multi-row statements of power-of-two runs, ``UPDATE ... FROM
   (VALUES ...)``, where the conversations whose ``active_at`` minute moved get a
   statement that sets it too, the only one that touches the listing indexes; on
   PostgreSQL one statement, the rows as one array per column, ``unnest``).

Holding the conversation row lock from step 1 to the commit is what makes
steps 2-3 safe across processes: no other transaction can add a message to
those conversations in between. (On SQLite the whole database is locked by
``BEGIN IMMEDIATE`` already.) On SQLite the four steps run in the writer
thread as one job, so a batch costs one hop from the event loop; on
PostgreSQL they are three statements (plus BEGIN and COMMIT) on the
connection reserved for appends.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kefu.core.domain import Message
from kefu.core.storage import StorageError

from .tables import MESSAGE, activity_minute

Key = tuple[str, str]  # (site_id, conversation_id)
CidKey = tuple[str, str, str]  # (site_id, conversation_id, cid)
#: A queued append: the message and its encoded columns without ``seq``
#: (``Statements.message_columns`` order, ``seq`` last, is these plus the seq).
Pending = tuple[Message, list[Any]]
Result = tuple[Message, bool] | Exception

SEQ = MESSAGE.fields.index("seq")


def pending(message: Message) -> Pending:
    """Encode ``message`` for a batch; raises :class:`StorageError` when it cannot be stored."""
    row = MESSAGE.encode(message)
    del row[SEQ]
    return message, row


def conversation_keys(batch: list[Pending]) -> list[Key]:
    return sorted({(m.site_id, m.conversation_id) for m, _ in batch})


def cid_keys(batch: list[Pending]) -> list[CidKey]:
    return list(dict.fromkeys((m.site_id, m.conversation_id, m.cid) for m, _ in batch))


Bump = tuple[int, float, float, str, str]


def number(
    batch: list[Pending], heads: dict[Key, list[Any]], found: dict[CidKey, Message]
) -> tuple[list[Result], list[list[Any]], list[Bump], list[bool]]:
    """Step 3: one result per message, the rows to insert, the conversation updates.

    ``heads`` maps each conversation found to ``[last_seq, updated_at]`` (moved on
    here); ``found`` maps the cids already stored to their message. The updates
    are ``(last_seq, updated_at, active_at, site_id, id)``, in key order, each with
    whether ``active_at`` (the minute of ``updated_at``) moved.
    """
    results: list[Result] = []
    rows: list[list[Any]] = []
    stored_here: dict[CidKey, Message] = {}
    minutes = {k: activity_minute(h[1]) for k, h in heads.items()}
    for message, row in batch:
        key = (message.site_id, message.conversation_id, message.cid)
        head = heads.get(key[:2])
        if head is None:
            results.append(StorageError(f"conversation {message.conversation_id!r} not found"))
        elif key in found:
            results.append((found[key], False))
        elif key in stored_here:
            results.append((stored_here[key], False))
        else:
            head[0] += 1
            if message.created_at > head[1]:
                head[1] = message.created_at
            stored = dataclasses.replace(message, seq=head[0])
            stored_here[key] = stored
            results.append((stored, True))
            rows.append([*row, head[0]])
    touched = sorted({(m.site_id, m.conversation_id) for m in stored_here.values()})
    bumps = [(heads[k][0], heads[k][1], activity_minute(heads[k][1]), k[0], k[1]) for k in touched]
    moved = [b[2] != minutes[k] for b, k in zip(bumps, touched, strict=True)]
    return results, rows, bumps, moved

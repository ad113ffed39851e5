"""Search, conversation filters and data rights on MongoDB (``core.storage.Searchable``).

Messages are matched with one case-insensitive ``$regex`` per term on ``text``
(substrings, any script), scoped by ``site_id`` and sorted by the
``(site_id, created_at)`` index created here: a scan of the site's messages,
not an index lookup. MongoDB's ``$text`` index matches whole words and no CJK
substrings, and SecantusDB (the server the tests run) has none, so it is not
used. Contacts: the site's most recent visitors, checked with
:func:`kefu.core.storage.contact_text` (at most ``CONTACT_SCAN`` of them).
Erasing a visitor deletes messages, then conversations, then the visitor: an
erasure cut short is finished by running it again.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import PyMongoError

from kefu.core.domain import Conversation, Message, Visitor
from kefu.core.storage import (
    SEARCH_LIMIT,
    ConversationFilter,
    StorageError,
    contact_text,
    holds_terms,
    search_terms,
)

from .records import from_doc

#: Most visitors one contact search looks at (newest first).
CONTACT_SCAN = 10_000

SEARCH_INDEXES: dict[str, list[IndexModel]] = {
    "messages": [IndexModel([("site_id", ASCENDING), ("created_at", DESCENDING)])],
    "visitors": [IndexModel([("site_id", ASCENDING), ("last_seen_at", DESCENDING)])],
}


class MongoSearch:
    """The Searchable methods of ``MongoStorage`` (a mixin)."""

    def _conn(self) -> Any:  # pragma: no cover - MongoStorage's
        raise NotImplementedError

    async def _all(self, cls: type, collection: str, query: dict, sort: list, limit=0) -> list:
        raise NotImplementedError  # pragma: no cover - MongoStorage's

    async def _open_search(self) -> None:
        for name, indexes in SEARCH_INDEXES.items():
            await self._conn()[name].create_indexes(indexes)

    async def search_messages(
        self, site_id: str, query: str, *, limit: int = 20, before: float | None = None
    ) -> list[Message]:
        terms = search_terms(query)
        limit = min(max(limit, 0), SEARCH_LIMIT)
        if not terms or not limit:
            return []
        match: dict[str, Any] = {
            "site_id": site_id,
            "type": {"$ne": "event"},
            "$and": [{"text": {"$regex": re.escape(t), "$options": "i"}} for t in terms],
        }
        if before is not None:
            match["created_at"] = {"$lt": before}
        found = await self._all(Message, "messages", match, [("created_at", -1)], limit)
        return [m for m in found if holds_terms(m.text, terms)]

    async def search_visitors(self, site_id: str, query: str, *, limit: int = 20) -> list[Visitor]:
        terms = search_terms(query)
        limit = min(max(limit, 0), SEARCH_LIMIT)
        if not terms or not limit:
            return []
        found: list[Visitor] = []
        try:
            cursor = self._conn()["visitors"].find(
                {"site_id": site_id}, {"_id": 0}, sort=[("last_seen_at", -1)], limit=CONTACT_SCAN
            )
            async for doc in cursor:
                visitor = from_doc(Visitor, doc)
                if holds_terms(contact_text(visitor), terms):
                    found.append(visitor)
                    if len(found) >= limit:
                        break
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return found

    async def list_visitors(
        self, site_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[Visitor]:
        if limit <= 0:
            return []
        query: dict[str, Any] = {"site_id": site_id}
        if before is not None:
            query["last_seen_at"] = {"$lt": before}
        sort = [("last_seen_at", -1), ("id", -1)]
        return await self._all(Visitor, "visitors", query, sort, limit)

    async def find_conversations(
        self,
        site_id: str,
        where: ConversationFilter,
        *,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        query: dict[str, Any] = {"site_id": site_id}
        if where.states:
            query["state"] = {"$in": list(where.states)}
        if where.assignee_id is not None:
            query["assignee_id"] = where.assignee_id or None
        if where.department is not None:
            query["department"] = where.department
        if where.tag is not None:
            query["tags"] = where.tag
        created: dict[str, float] = {}
        if where.since is not None:
            created["$gte"] = where.since
        if where.until is not None:
            created["$lt"] = where.until
        if created:
            query["created_at"] = created
        if where.ids is not None:
            query["id"] = {"$in": list(where.ids)}
        if where.visitor_ids is not None:
            query["visitor_id"] = {"$in": list(where.visitor_ids)}
        if before is not None:
            query["updated_at"] = {"$lt": before}
        sort = [("updated_at", -1), ("id", -1)]
        found = await self._all(Conversation, "conversations", query, sort, limit)
        return [c for c in found if where.matches(c)]

    async def redact_message(
        self, site_id: str, conversation_id: str, seq: int, *, text: str, meta: dict[str, Any]
    ) -> bool:
        try:
            meta = orjson.loads(orjson.dumps(meta))
        except TypeError as exc:
            raise StorageError(f"message meta: {exc}") from None
        query = {"site_id": site_id, "conversation_id": conversation_id, "seq": seq}
        change = {"$set": {"text": text, "attachment": None, "meta": meta}}
        try:
            result = await self._conn()["messages"].update_one(query, change)
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return result.matched_count == 1

    async def delete_visitor(self, site_id: str, visitor_id: str) -> int:
        db = self._conn()
        key = {"site_id": site_id, "id": visitor_id}
        try:
            if await db["visitors"].find_one(key, {"_id": 1}) is None:
                return -1
            ids = [
                doc["id"]
                async for doc in db["conversations"].find(
                    {"site_id": site_id, "visitor_id": visitor_id}, {"_id": 0, "id": 1}
                )
            ]
            removed = 0
            if ids:
                gone = await db["messages"].delete_many(
                    {"site_id": site_id, "conversation_id": {"$in": ids}}
                )
                removed = gone.deleted_count
                await db["conversations"].delete_many({"site_id": site_id, "id": {"$in": ids}})
            await db["visitors"].delete_one(key)
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return removed

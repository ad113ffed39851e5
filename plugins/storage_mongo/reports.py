"""Report facts on MongoDB (``core.reports.Reportable``).

A page of conversations is read by the ``(site_id, created_at, id)`` index, then
their messages in one query (sender, type and time only, by the messages'
``(site_id, conversation_id, seq)`` index); :func:`kefu.core.reports.facts_of`
counts them, as on the memory backend. No aggregation pipeline: SecantusDB, the
server the tests run, needs none of it to agree with MongoDB.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import PyMongoError

from kefu.core.domain import Conversation
from kefu.core.reports import FACTS_PAGE, ConversationFacts, facts_of
from kefu.core.storage import StorageError

REPORT_INDEXES: dict[str, list[IndexModel]] = {
    "conversations": [
        IndexModel([("site_id", ASCENDING), ("created_at", ASCENDING), ("id", ASCENDING)])
    ],
}
MESSAGE_FIELDS = {"_id": 0, "conversation_id": 1, "sender_kind": 1, "type": 1, "created_at": 1}


class MongoReports:
    """The Reportable method of ``MongoStorage`` (a mixin)."""

    def _conn(self) -> Any:  # pragma: no cover - MongoStorage's
        raise NotImplementedError

    async def _all(self, cls: type, collection: str, query: dict, sort: list, limit=0) -> list:
        raise NotImplementedError  # pragma: no cover - MongoStorage's

    async def _open_reports(self) -> None:
        for name, indexes in REPORT_INDEXES.items():
            await self._conn()[name].create_indexes(indexes)

    async def conversation_facts(
        self,
        site_id: str,
        since: float,
        until: float,
        *,
        after: tuple[float, str] | None = None,
        limit: int = 1000,
    ) -> list[ConversationFacts]:
        limit = max(min(limit, FACTS_PAGE), 0)
        if not limit:
            return []
        query: dict[str, Any] = {"site_id": site_id, "created_at": {"$gte": since, "$lt": until}}
        if after is not None:
            query["$or"] = [
                {"created_at": {"$gt": after[0]}},
                {"created_at": after[0], "id": {"$gt": after[1]}},
            ]
        sort = [("created_at", 1), ("id", 1)]
        found = await self._all(Conversation, "conversations", query, sort, limit)
        if not found:
            return []
        by_conversation: dict[str, list[SimpleNamespace]] = defaultdict(list)
        match = {
            "site_id": site_id,
            "conversation_id": {"$in": [c.id for c in found]},
            "type": {"$ne": "event"},
        }
        try:
            async for doc in self._conn()["messages"].find(match, MESSAGE_FIELDS):
                by_conversation[doc["conversation_id"]].append(SimpleNamespace(**doc))
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return [facts_of(c, by_conversation.get(c.id, ())) for c in found]  # type: ignore[arg-type]

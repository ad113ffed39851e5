"""``MongoStorage``: the StorageBackend on PyMongo's async client (MongoDB, SecantusDB).

Imported only when the ``mongo`` backend is chosen, so kefu runs without
pymongo installed. Every query filters on ``site_id``; every lookup is served
by a unique compound index that starts with it (created at ``open()``).
Acknowledgements follow the configured write concern (default: majority,
journaled).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import bson
import orjson
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.write_concern import WriteConcern

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor
from kefu.core.storage import (
    UNCHANGED,
    DuplicateError,
    GroupCommit,
    Record,
    StorageError,
    VersionConflict,
    email_key,
)

from .appends import append_to_conversation
from .blobs import MongoBlobs
from .records import from_doc, to_doc
from .reports import MongoReports
from .search import MongoSearch

log = logging.getLogger(__name__)

NO_ID = {"_id": 0}


def _unique(*keys: str) -> IndexModel:
    return IndexModel([(k, ASCENDING) for k in keys], unique=True)


def _newest(*keys: str) -> IndexModel:
    return IndexModel([*((k, ASCENDING) for k in keys), ("updated_at", DESCENDING)])


INDEXES: dict[str, list[IndexModel]] = {
    "sites": [_unique("id"), _unique("widget_key")],
    "agents": [_unique("site_id", "id"), _unique("site_id", "email_key")],
    "visitors": [_unique("site_id", "id")],
    "conversations": [
        _unique("site_id", "id"),
        _newest("site_id"),
        _newest("site_id", "state"),
        _newest("site_id", "assignee_id"),
        _newest("site_id", "visitor_id"),
        # at most one open conversation per visitor: ``open_visitor`` is set while it is open
        IndexModel(
            [("site_id", ASCENDING), ("open_visitor", ASCENDING)],
            unique=True,
            partialFilterExpression={"open_visitor": {"$exists": True}},
        ),
    ],
    "messages": [
        _unique("site_id", "conversation_id", "seq"),
        _unique("site_id", "conversation_id", "cid"),
    ],
    "records": [_unique("site_id", "kind", "id")],
}


class MongoStorage(MongoSearch, MongoReports, MongoBlobs):
    """The ``mongo`` backend."""

    name = "mongo"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        write_concern: str | int = "majority",
        journal: bool = True,
        batch_max: int = 256,
        batch_window: float = 0.0,
    ) -> None:
        self.url = url
        self.database = database
        self._write_concern = WriteConcern(w=write_concern, j=journal)
        self._client: AsyncMongoClient | None = None
        self._db: Any = None
        self.appender: GroupCommit[Message, tuple[Message, bool]] = GroupCommit(
            self._flush_appends, max_batch=batch_max, window=batch_window, name="kefu-mongo-append"
        )

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        self._client = AsyncMongoClient(self.url, tz_aware=False, connect=True)
        self._db = self._client.get_database(self.database, write_concern=self._write_concern)
        try:
            for name, indexes in INDEXES.items():
                await self._db[name].create_indexes(indexes)
            await self._open_search()  # search.py
            await self._open_reports()  # reports.py
            await self._open_blobs()  # blobs.py
        except PyMongoError as exc:
            await self.close()
            raise StorageError(f"mongo: cannot prepare {self.database!r}: {exc}") from exc
        log.info("mongo storage open: database %r", self.database)

    async def close(self) -> None:
        await self.appender.close()
        if self._client is not None:
            await self._client.close()
            self._client = self._db = None

    async def ping(self) -> None:
        try:
            await self._conn().command("ping")
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc

    def _conn(self) -> Any:
        if self._db is None:
            raise StorageError("mongo storage is not open")
        return self._db

    async def _insert(self, collection: str, record: Any) -> Any:
        try:
            await self._conn()[collection].insert_one(to_doc(record))
        except DuplicateKeyError as exc:
            raise DuplicateError(f"{collection}: {_key_of(exc)} already taken") from exc
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return record

    async def _one(self, cls: type, collection: str, query: dict) -> Any:
        try:
            doc = await self._conn()[collection].find_one(query, NO_ID)
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return from_doc(cls, doc) if doc is not None else None

    async def _all(self, cls: type, collection: str, query: dict, sort: list, limit=0) -> list:
        try:
            cursor = self._conn()[collection].find(query, NO_ID, sort=sort, limit=limit)
            return [from_doc(cls, doc) async for doc in cursor]
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc

    async def _update(self, collection: str, query: dict, fields: dict) -> bool:
        try:
            result = await self._conn()[collection].update_one(query, {"$set": fields})
        except DuplicateKeyError as exc:
            raise DuplicateError(f"{collection}: {_key_of(exc)} already taken") from exc
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return result.matched_count == 1

    # -- sites ----------------------------------------------------------------
    async def create_site(self, site: Site) -> Site:
        return await self._insert("sites", site)

    async def get_site(self, site_id: str) -> Site | None:
        return await self._one(Site, "sites", {"id": site_id})

    async def get_site_by_widget_key(self, widget_key: str) -> Site | None:
        return await self._one(Site, "sites", {"widget_key": widget_key})

    async def list_sites(self) -> list[Site]:
        return await self._all(Site, "sites", {}, [("created_at", 1), ("id", 1)])

    async def update_site(self, site: Site) -> bool:
        return await self._update("sites", {"id": site.id}, to_doc(site))

    # -- agents ---------------------------------------------------------------
    async def create_agent(self, agent: Agent) -> Agent:
        return await self._insert("agents", agent)

    async def get_agent(self, site_id: str, agent_id: str) -> Agent | None:
        return await self._one(Agent, "agents", {"site_id": site_id, "id": agent_id})

    async def get_agent_by_email(self, site_id: str, email: str) -> Agent | None:
        query = {"site_id": site_id, "email_key": email_key(email)}
        return await self._one(Agent, "agents", query)

    async def list_agents(self, site_id: str) -> list[Agent]:
        sort = [("created_at", 1), ("id", 1)]
        return await self._all(Agent, "agents", {"site_id": site_id}, sort)

    async def update_agent(self, agent: Agent) -> bool:
        query = {"site_id": agent.site_id, "id": agent.id}
        return await self._update("agents", query, to_doc(agent))

    # -- visitors -------------------------------------------------------------
    async def upsert_visitor(self, visitor: Visitor) -> Visitor:
        fields = to_doc(visitor)
        created_at = fields.pop("created_at")
        query = {"site_id": visitor.site_id, "id": visitor.id}
        update = {"$set": fields, "$setOnInsert": {"created_at": created_at}}
        for attempt in range(2):  # two first upserts of one visitor race on the unique index
            try:
                doc = await self._conn().visitors.find_one_and_update(
                    query, update, NO_ID, upsert=True, return_document=ReturnDocument.AFTER
                )
                return from_doc(Visitor, doc)
            except DuplicateKeyError:
                if attempt:
                    raise
            except PyMongoError as exc:
                raise StorageError(f"mongo: {exc}") from exc
        raise AssertionError("unreachable")

    async def get_visitor(self, site_id: str, visitor_id: str) -> Visitor | None:
        return await self._one(Visitor, "visitors", {"site_id": site_id, "id": visitor_id})

    # -- conversations --------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> Conversation:
        stored = from_doc(Conversation, {**to_doc(conversation), "last_seq": 0})
        return await self._insert("conversations", stored)

    async def open_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        query = {"site_id": conversation.site_id, "open_visitor": conversation.visitor_id}
        for _ in range(5):
            try:
                return await self.create_conversation(conversation), True
            except DuplicateError:
                pass
            found = await self._one(Conversation, "conversations", query)
            if found is not None:
                return found, False
        raise StorageError("mongo: the visitor's open conversation keeps changing")

    async def get_conversation(self, site_id: str, conversation_id: str) -> Conversation | None:
        query = {"site_id": site_id, "id": conversation_id}
        return await self._one(Conversation, "conversations", query)

    async def list_conversations(
        self,
        site_id: str,
        *,
        state: str | None = None,
        assignee_id: str | None = None,
        visitor_id: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        if limit <= 0:
            return []
        query: dict[str, Any] = {"site_id": site_id}
        for name, value in (("state", state), ("assignee_id", assignee_id)):
            if value is not None:
                query[name] = value
        if visitor_id is not None:
            query["visitor_id"] = visitor_id
        if before is not None:
            query["updated_at"] = {"$lt": before}
        sort = [("updated_at", -1), ("id", -1)]
        return await self._all(Conversation, "conversations", query, sort, limit)

    async def update_conversation(
        self,
        conversation: Conversation,
        *,
        if_state: str | None = None,
        if_assignee: Any = UNCHANGED,
        if_version: int | None = None,
    ) -> bool:
        query: dict[str, Any] = {"site_id": conversation.site_id, "id": conversation.id}
        if if_state is not None:
            query["state"] = if_state
        if if_assignee is not UNCHANGED:
            query["assignee_id"] = if_assignee  # None matches null: "only while unassigned"
        if if_version is not None:  # (a document an older kefu wrote has no version: 0)
            query["version"] = {"$in": [0, None]} if if_version == 0 else if_version
        fields = to_doc(conversation)
        del fields["last_seq"]  # owned by append_message
        del fields["version"]
        change: dict[str, Any] = {"$set": fields, "$inc": {"version": 1}}
        if "open_visitor" not in fields:
            change["$unset"] = {"open_visitor": ""}
        try:
            result = await self._conn()["conversations"].update_one(query, change)
        except DuplicateKeyError as exc:
            raise DuplicateError("conversations: the visitor has another open one") from exc
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return result.matched_count == 1

    # -- messages -------------------------------------------------------------
    async def append_message(self, message: Message) -> tuple[Message, bool]:
        try:  # a message that cannot be encoded fails here, alone, not its whole batch
            bson.encode(to_doc(message))
        except (bson.errors.InvalidDocument, OverflowError) as exc:
            raise StorageError(f"Message: {exc}") from None
        return await self.appender.submit(message)

    async def _flush_appends(self, batch: list[Message]) -> list[tuple[Message, bool] | Exception]:
        db = self._conn()
        groups: dict[tuple[str, str], list[int]] = {}
        for i, m in enumerate(batch):
            groups.setdefault((m.site_id, m.conversation_id), []).append(i)

        async def one(key: tuple[str, str], indexes: list[int]) -> list:
            try:
                return await append_to_conversation(db, *key, [batch[i] for i in indexes])
            except PyMongoError as exc:
                return [StorageError(f"mongo: {exc}")] * len(indexes)

        answers = await asyncio.gather(*(one(k, ix) for k, ix in groups.items()))
        results: list[Any] = [None] * len(batch)
        for indexes, answer in zip(groups.values(), answers, strict=True):
            for i, result in zip(indexes, answer, strict=True):
                results[i] = result
        return results

    async def list_messages(
        self, site_id: str, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Message]:
        if limit <= 0:
            return []
        query = {"site_id": site_id, "conversation_id": conversation_id, "seq": {"$gt": after_seq}}
        return await self._all(Message, "messages", query, [("seq", 1)], limit)

    async def list_messages_before(
        self, site_id: str, conversation_id: str, *, before_seq: int, limit: int = 50
    ) -> list[Message]:
        if limit <= 0:
            return []
        query = {"site_id": site_id, "conversation_id": conversation_id, "seq": {"$lt": before_seq}}
        found = await self._all(Message, "messages", query, [("seq", -1)], limit)
        return list(reversed(found))

    # -- plugin records -------------------------------------------------------
    # ``data`` is kept as JSON text: any key a JSON object may have (".", "$") round-trips,
    # and the document is the same on every backend.
    async def get_record(self, site_id: str, kind: str, record_id: str) -> Record | None:
        key = {"site_id": site_id, "kind": kind, "id": record_id}
        try:
            doc = await self._conn()["records"].find_one(key, NO_ID)
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return _record(doc) if doc is not None else None

    async def put_record(
        self,
        site_id: str,
        kind: str,
        record_id: str,
        data: dict[str, Any],
        *,
        expect_version: int | None = None,
    ) -> Record:
        try:
            text = orjson.dumps(data).decode()
        except TypeError as exc:
            raise StorageError(f"record {kind}/{record_id}: {exc}") from None
        key = {"site_id": site_id, "kind": kind, "id": record_id}
        fields = {"data": text, "updated_at": time.time()}
        records, what = self._conn()["records"], f"record {kind}/{record_id}"
        try:
            if expect_version == 0:
                try:
                    await records.insert_one({**key, **fields, "version": 1})
                except DuplicateKeyError:
                    raise VersionConflict(f"{what} exists") from None
                return _record({**key, **fields, "version": 1})
            change = {"$set": fields, "$inc": {"version": 1}}
            after = ReturnDocument.AFTER
            if expect_version is not None:
                doc = await records.find_one_and_update(
                    {**key, "version": expect_version}, change, NO_ID, return_document=after
                )
                if doc is None:
                    raise VersionConflict(f"{what} is not at version {expect_version}")
                return _record(doc)
            for _ in range(5):  # replace, else create; a racing creator makes us replace
                doc = await records.find_one_and_update(key, change, NO_ID, return_document=after)
                if doc is not None:
                    return _record(doc)
                try:
                    await records.insert_one({**key, **fields, "version": 1})
                except DuplicateKeyError:
                    continue
                return _record({**key, **fields, "version": 1})
            raise StorageError(f"mongo: {what}: concurrent first writes")
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc

    async def list_records(
        self,
        site_id: str,
        kind: str,
        *,
        prefix: str = "",
        after: str = "",
        limit: int = 100,
    ) -> list[Record]:
        if limit <= 0:
            return []
        ids: dict[str, Any] = {"$gt": after}
        if prefix:
            ids["$regex"] = "^" + re.escape(prefix)
        query = {"site_id": site_id, "kind": kind, "id": ids}
        try:
            cursor = self._conn()["records"].find(query, NO_ID, sort=[("id", 1)], limit=limit)
            return [_record(doc) async for doc in cursor]
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc

    async def delete_record(
        self, site_id: str, kind: str, record_id: str, *, expect_version: int | None = None
    ) -> bool:
        key = {"site_id": site_id, "kind": kind, "id": record_id}
        what = f"record {kind}/{record_id}"
        try:
            if expect_version == 0:
                if await self._conn()["records"].find_one(key, NO_ID) is not None:
                    raise VersionConflict(f"{what} exists")
                return False
            query = key if expect_version is None else {**key, "version": expect_version}
            result = await self._conn()["records"].delete_one(query)
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        if result.deleted_count == 1:
            return True
        if expect_version is not None:
            raise VersionConflict(f"{what} is not at version {expect_version}")
        return False


def _record(doc: dict[str, Any]) -> Record:
    data = orjson.loads(doc["data"])
    return Record(doc["site_id"], doc["kind"], doc["id"], data, doc["version"], doc["updated_at"])


def _key_of(exc: DuplicateKeyError) -> str:
    key = (exc.details or {}).get("keyValue") or {}
    return ", ".join(k for k in key if k != "site_id") or "a unique key"

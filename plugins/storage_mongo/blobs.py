"""File contents on MongoDB (``core.storage.BlobStore``): GridFS-like chunks.

A blob is a ``blobs`` document (site, id, type, size, chunk count) and its
bytes are ``blob_chunks`` documents of at most :data:`CHUNK_BYTES` each (a
document is limited to 16 MiB, a file is not). The head is inserted first,
unique on ``(site_id, id)`` so an id is written once, with ``complete: false``;
the chunks follow, then the head is marked complete: a reader never sees a
half-written blob, and a writer that died midway leaves a head nobody reads.
Both collections are keyed by site first (shard keys ``{site_id: 1, id: 1}``
and ``{site_id: 1, blob_id: 1}``, see docs/storage.md).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import bson
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError, PyMongoError

from kefu.core.storage import BlobInfo, DuplicateError, StorageError

#: Bytes per chunk document (GridFS uses 255 KiB; fewer, larger round trips here).
CHUNK_BYTES = 1024 * 1024

BLOB_INDEXES: dict[str, list[IndexModel]] = {
    "blobs": [
        IndexModel([("site_id", ASCENDING), ("id", ASCENDING)], unique=True),
        IndexModel([("site_id", ASCENDING), ("owner", ASCENDING), ("id", ASCENDING)]),
    ],
    "blob_chunks": [
        IndexModel([("site_id", ASCENDING), ("blob_id", ASCENDING), ("n", ASCENDING)], unique=True)
    ],
}
_HEAD = {"_id": 0, "size": 1, "mime": 1, "created_at": 1, "chunks": 1, "owner": 1}


def _info(site_id: str, blob_id: str, head: dict[str, Any]) -> BlobInfo:
    fields = (head["size"], head["mime"], head["created_at"], head.get("owner", ""))
    return BlobInfo(site_id, blob_id, *fields)


class MongoBlobs:
    """The BlobStore methods of :class:`~kefu.plugins.storage_mongo.MongoStorage` (a mixin)."""

    def _conn(self) -> Any:  # pragma: no cover - MongoStorage's
        raise NotImplementedError

    async def _open_blobs(self) -> None:
        for name, indexes in BLOB_INDEXES.items():
            await self._conn()[name].create_indexes(indexes)

    async def put_blob(
        self, site_id: str, blob_id: str, data: bytes, *, mime: str, owner: str = ""
    ) -> BlobInfo:
        db, now = self._conn(), time.time()
        pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        key = {"site_id": site_id, "id": blob_id}
        head = {**key, "mime": mime, "size": len(data), "created_at": now, "owner": owner}
        try:
            await db.blobs.insert_one({**head, "chunks": len(pieces), "complete": False})
        except DuplicateKeyError:
            raise DuplicateError(f"blob {blob_id!r} already exists") from None
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        try:
            if pieces:
                await db.blob_chunks.insert_many(
                    [
                        {"site_id": site_id, "blob_id": blob_id, "n": n, "data": bson.Binary(p)}
                        for n, p in enumerate(pieces)
                    ]
                )
            await db.blobs.update_one(key, {"$set": {"complete": True}})
        except PyMongoError as exc:
            with contextlib.suppress(PyMongoError):  # leave nothing half-written behind
                await db.blob_chunks.delete_many({"site_id": site_id, "blob_id": blob_id})
                await db.blobs.delete_one(key)
            raise StorageError(f"mongo: {exc}") from exc
        return BlobInfo(site_id, blob_id, len(data), mime, now, owner)

    async def _head(self, site_id: str, blob_id: str) -> dict[str, Any] | None:
        query = {"site_id": site_id, "id": blob_id, "complete": True}
        try:
            return await self._conn().blobs.find_one(query, _HEAD)
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc

    async def blob_info(self, site_id: str, blob_id: str) -> BlobInfo | None:
        head = await self._head(site_id, blob_id)
        return None if head is None else _info(site_id, blob_id, head)

    async def get_blob(self, site_id: str, blob_id: str) -> tuple[BlobInfo, bytes] | None:
        head = await self._head(site_id, blob_id)
        if head is None:
            return None
        data = await self._chunks(site_id, blob_id, range(head["chunks"]), whole=True)
        return _info(site_id, blob_id, head), data

    async def _chunks(self, site_id: str, blob_id: str, wanted: range, *, whole: bool) -> bytes:
        """The chunks numbered ``wanted``, joined; StorageError unless exactly those came
        (``whole``: every chunk of the blob is read, so a stray one is an error too)."""
        query: dict = {"site_id": site_id, "blob_id": blob_id}
        if not whole:
            query["n"] = {"$gte": wanted.start, "$lte": wanted.stop - 1}
        try:
            cursor = self._conn().blob_chunks.find(
                query, {"_id": 0, "n": 1, "data": 1}, sort=[("n", 1)]
            )
            chunks = [doc async for doc in cursor]
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        if [c["n"] for c in chunks] != list(wanted):
            raise StorageError(f"mongo: blob {blob_id!r} has missing chunks")
        return b"".join(bytes(c["data"]) for c in chunks)

    async def read_blob(self, site_id: str, blob_id: str, offset: int, length: int) -> bytes | None:
        head = await self._head(site_id, blob_id)
        if head is None:
            return None
        end = min(offset + max(length, 0), head["size"])
        if offset >= end:
            return b""
        first, last = offset // CHUNK_BYTES, (end - 1) // CHUNK_BYTES  # only the chunks needed
        data = await self._chunks(site_id, blob_id, range(first, last + 1), whole=False)
        skip = offset - first * CHUNK_BYTES
        return data[skip : skip + end - offset]

    async def delete_blob(self, site_id: str, blob_id: str) -> bool:
        db = self._conn()
        try:
            result = await db.blobs.delete_one({"site_id": site_id, "id": blob_id})
            await db.blob_chunks.delete_many({"site_id": site_id, "blob_id": blob_id})
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc
        return result.deleted_count == 1

    async def owned_blobs(self, site_id: str, owner: str, *, limit: int = 100) -> list[str]:
        if not owner:
            return []
        query = {"site_id": site_id, "owner": owner}  # half-written ones too: theirs as well
        try:
            cursor = self._conn().blobs.find(
                query, {"_id": 0, "id": 1}, sort=[("id", 1)], limit=limit
            )
            return [doc["id"] async for doc in cursor]
        except PyMongoError as exc:
            raise StorageError(f"mongo: {exc}") from exc

"""File contents on SQL (``core.storage.BlobStore``): one row per blob in ``blobs``.

The bytes are a ``BLOB`` on SQLite and a ``bytea`` on PostgreSQL, in the same
row as their size and type, so a write is one ``INSERT`` (durable when it
returns, as every write), ``blob_info`` reads the small columns only and
``read_blob`` a slice (``substr``), not the whole value.
"""

from __future__ import annotations

import time
from typing import Any

from kefu.core.storage import BlobInfo, DuplicateError

from .tables import blobs

_KEY = "site_id = ? AND id = ?"
#: The columns of a BlobInfo after its key, in its order.
_HEAD = "size, mime, created_at, owner"


class SqlBlobs:
    """The BlobStore methods of :class:`~kefu.plugins.storage_sql.SqlStorage` (a mixin)."""

    def _ready(self) -> tuple[Any, Any]:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def put_blob(
        self, site_id: str, blob_id: str, data: bytes, *, mime: str, owner: str = ""
    ) -> BlobInfo:
        db, sql = self._ready()
        now = time.time()
        stmt = sql.text(
            f"INSERT INTO {sql.table(blobs)} (site_id, id, mime, size, created_at, owner, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, id) DO NOTHING RETURNING size"
        )
        params = (site_id, blob_id, mime, len(data), now, owner, bytes(data))
        if await db.execute_returning(stmt, params, f"blob {blob_id}") is None:
            raise DuplicateError(f"blob {blob_id!r} already exists")
        return BlobInfo(site_id, blob_id, len(data), mime, now, owner)

    async def blob_info(self, site_id: str, blob_id: str) -> BlobInfo | None:
        db, sql = self._ready()
        stmt = sql.text(f"SELECT {_HEAD} FROM {sql.table(blobs)} WHERE {_KEY}")
        row = await db.fetch_one(stmt, (site_id, blob_id), "blob")
        return None if row is None else BlobInfo(site_id, blob_id, *row)

    async def get_blob(self, site_id: str, blob_id: str) -> tuple[BlobInfo, bytes] | None:
        db, sql = self._ready()
        stmt = sql.text(f"SELECT {_HEAD}, data FROM {sql.table(blobs)} WHERE {_KEY}")
        row = await db.fetch_one(stmt, (site_id, blob_id), "blob")
        if row is None:
            return None
        return BlobInfo(site_id, blob_id, *row[:4]), bytes(row[4])

    async def read_blob(self, site_id: str, blob_id: str, offset: int, length: int) -> bytes | None:
        db, sql = self._ready()
        # substr counts bytes of a BLOB (SQLite) and of a bytea (PostgreSQL), from 1
        stmt = sql.text(f"SELECT substr(data, ?, ?) FROM {sql.table(blobs)} WHERE {_KEY}")
        row = await db.fetch_one(stmt, (offset + 1, max(length, 0), site_id, blob_id), "blob")
        return None if row is None else bytes(row[0] or b"")

    async def delete_blob(self, site_id: str, blob_id: str) -> bool:
        db, sql = self._ready()
        stmt = sql.text(f"DELETE FROM {sql.table(blobs)} WHERE {_KEY}")
        return await db.execute(stmt, (site_id, blob_id), "blob") == 1

    async def owned_blobs(self, site_id: str, owner: str, *, limit: int = 100) -> list[str]:
        if not owner:
            return []
        db, sql = self._ready()
        stmt = sql.text(
            f"SELECT id FROM {sql.table(blobs)} WHERE site_id = ? AND owner = ? ORDER BY id LIMIT ?"
        )
        return [row[0] for row in await db.fetch_all(stmt, (site_id, owner, limit), "blobs")]

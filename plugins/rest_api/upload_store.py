"""Where uploaded files are kept: files in a directory, or blobs in storage.

``[uploads] store`` (read at start-up):

- ``"auto"`` (default): in storage when the storage is one several machines
  share (PostgreSQL, MongoDB: :func:`kefu.core.supervisor.storage_is_shared`),
  so a file uploaded through one node is served by every other; files
  otherwise (SQLite, memory: one machine, as before);
- ``"files"``: ``<dir>/<site>/<stored name>``, ``dir`` being ``[uploads] dir``
  (a shared file system for several machines) or ``<data_dir>/uploads``;
- ``"storage"``: blobs through :class:`kefu.core.storage.BlobStore`, on any backend.

In storage, a file not found as a blob is looked for in the directory too, so
what a node stored as a file before the switch is still served by that node
(and deleted from there). Both stores read a slice without the rest of the file
(``read``: downloads in pieces, HTTP ``Range``) and delete for good (``delete``).

Both keep who uploaded a file (``owner``: ``"visitor:<id>"``, ``"agent:<id>"``) so that an
erasure deletes a person's uploads that no message carries (``owned``): in storage it is a
field of the blob, written with the bytes (``BlobStore.owned_blobs``); for files it is a
plugin record of kind :data:`OWNER_KIND` with the id ``<owner>/<stored name>``, written
before the file (a crash between leaves a record naming nothing, never an unowned file).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from pathlib import Path
from typing import Protocol

from kefu.core.errors import ConfigError
from kefu.core.kernel import Kernel
from kefu.core.storage import BlobStore, DuplicateError, StorageBackend
from kefu.core.supervisor import storage_is_shared

log = logging.getLogger(__name__)

#: Plugin records naming the owner of a file in the files store: ``<owner>/<stored name>``.
OWNER_KIND = "upload.owner"
#: Uploads listed per round of :meth:`UploadStore.owned`.
OWNED_PAGE = 100


class UploadStore(Protocol):
    kind: str

    async def put(self, site_id: str, stored: str, data: bytes, mime: str, owner: str) -> None: ...
    async def owned(self, site_id: str, owner: str) -> list[str]:
        """Stored names of at most :data:`OWNED_PAGE` uploads recorded with this owner."""

    async def forget(self, site_id: str, owner: str, stored: str) -> None:
        """Drop what says this upload is the owner's (after its bytes were deleted)."""

    async def size(self, site_id: str, stored: str) -> int | None: ...
    async def read(self, site_id: str, stored: str, offset: int, length: int) -> bytes | None:
        """At most ``length`` bytes from ``offset``; None when the upload is absent."""

    async def delete(self, site_id: str, stored: str) -> bool:
        """Remove the bytes; False when there were none."""


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner reads (0600) in folders only it enters (0700)."""
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _read_slice(path: Path, offset: int, length: int) -> bytes | None:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(max(length, 0))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class FileUploads:
    """``<root>/<site>/<stored name>``, written atomically, 0600 in 0700 folders."""

    kind = "files"

    def __init__(self, root: Path, records: StorageBackend) -> None:
        self.root = root
        self.records = records  # the owners (OWNER_KIND)

    def path(self, site_id: str, stored: str) -> Path:
        return self.root / site_id / stored

    async def put(self, site_id: str, stored: str, data: bytes, mime: str, owner: str) -> None:
        if owner:
            await self.records.put_record(site_id, OWNER_KIND, f"{owner}/{stored}", {})
        await asyncio.to_thread(_write_private, self.path(site_id, stored), data)

    async def owned(self, site_id: str, owner: str) -> list[str]:
        if not owner:
            return []
        prefix = f"{owner}/"
        found = await self.records.list_records(
            site_id, OWNER_KIND, prefix=prefix, limit=OWNED_PAGE
        )
        return [r.id[len(prefix) :] for r in found]

    async def forget(self, site_id: str, owner: str, stored: str) -> None:
        await self.records.delete_record(site_id, OWNER_KIND, f"{owner}/{stored}")

    async def size(self, site_id: str, stored: str) -> int | None:
        return await asyncio.to_thread(_file_size, self.path(site_id, stored))

    async def read(self, site_id: str, stored: str, offset: int, length: int) -> bytes | None:
        return await asyncio.to_thread(_read_slice, self.path(site_id, stored), offset, length)

    async def delete(self, site_id: str, stored: str) -> bool:
        return await asyncio.to_thread(_unlink, self.path(site_id, stored))


class StorageUploads:
    """Blobs in the storage backend (shared by every process on it), files as a fallback."""

    kind = "storage"

    def __init__(self, storage: BlobStore, files: FileUploads) -> None:
        self.storage = storage
        self.files = files  # what was stored as files before the switch

    async def put(self, site_id: str, stored: str, data: bytes, mime: str, owner: str) -> None:
        try:
            await self.storage.put_blob(site_id, stored, data, mime=mime, owner=owner)
        except DuplicateError:  # 128 random bits: only a retried write of the same file
            log.warning("upload %s/%s was already stored", site_id, stored)

    async def owned(self, site_id: str, owner: str) -> list[str]:
        blobs = await self.storage.owned_blobs(site_id, owner, limit=OWNED_PAGE)
        return blobs or await self.files.owned(site_id, owner)  # files: before the switch

    async def forget(self, site_id: str, owner: str, stored: str) -> None:
        await self.files.forget(site_id, owner, stored)  # a blob's owner went with it

    async def size(self, site_id: str, stored: str) -> int | None:
        info = await self.storage.blob_info(site_id, stored)
        return info.size if info is not None else await self.files.size(site_id, stored)

    async def read(self, site_id: str, stored: str, offset: int, length: int) -> bytes | None:
        data = await self.storage.read_blob(site_id, stored, offset, length)
        return data if data is not None else await self.files.read(site_id, stored, offset, length)

    async def delete(self, site_id: str, stored: str) -> bool:
        in_storage = await self.storage.delete_blob(site_id, stored)
        return await self.files.delete(site_id, stored) or in_storage


_STORES: weakref.WeakKeyDictionary[Kernel, UploadStore] = weakref.WeakKeyDictionary()


def open_store(kernel: Kernel) -> UploadStore:
    """The store ``[uploads] store`` and ``dir`` name, chosen once per kernel."""
    store = _STORES.get(kernel)
    if store is not None:
        return store
    settings = kernel.config.section("uploads")
    root = Path(settings.dir) if settings.dir else kernel.data_dir / "uploads"
    files = FileUploads(root, kernel.storage)
    choice = settings.store
    if choice == "auto":
        shared = storage_is_shared(kernel.config) and isinstance(kernel.storage, BlobStore)
        choice = "storage" if shared else "files"
    if choice == "storage":
        if not isinstance(kernel.storage, BlobStore):
            raise ConfigError(
                kernel.config.source,
                "uploads.store",
                f"'storage': the {kernel.storage.name!r} storage backend cannot keep files; "
                "use 'files' (with a shared `dir` for several machines)",
            )
        store = StorageUploads(kernel.storage, files)
    else:
        store = files
    log.info("uploads kept in %s", "storage" if store.kind == "storage" else files.root)
    _STORES[kernel] = store
    return store

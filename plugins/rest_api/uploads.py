"""File uploads: sniffed against an allow-list, size-limited, stored per site.

A file's type is decided by its first bytes, never by the name or the
declared content type, and it is stored under a random name with the
canonical extension of that type, ``<id>-<name>.<ext>``: as a file in
``<data_dir>/uploads/<site>/`` or as a blob in storage (``upload_store.py``).
Files are served back only to callers of the same site, with
``X-Content-Type-Options: nosniff`` and a sandboxing CSP, whole or by range
(``ranges.py``). An admin may delete one; a deleted message and an erased
contact take their attachments with them (:func:`delete_attachments`), and an erased
contact the files they uploaded and never sent too (:func:`delete_visitor_uploads`: every
upload records its uploader, :func:`owner_of`; a merge passes the merged contact's on,
:func:`note_merged`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field

from kefu.core.kernel import Kernel
from kefu.plugins.rest_api import ranges
from kefu.plugins.rest_api.endpoint import ApiError, Call, read_bounded
from kefu.plugins.rest_api.models import UploadOut
from kefu.plugins.rest_api.upload_store import open_store

log = logging.getLogger(__name__)

MimeType = Literal[
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"
]
EXTENSIONS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "text/plain": "txt",
}
#: Served inline (shown in the browser) besides images; anything else is a download.
INLINE_TYPES = frozenset({"application/pdf", "text/plain"})
#: Stored names: a 22-character random id, a dash, the sanitised original stem and extension.
STORED_NAME_PATTERN = r"^[A-Za-z0-9_-]{22}-[A-Za-z0-9._-]{1,80}$"
_STORED = re.compile(STORED_NAME_PATTERN)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class UploadSettings(BaseModel):
    """``[uploads]``: what ``POST /v1/uploads`` accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(10 * 1024 * 1024, ge=1, le=1024**3, description="Per file.")
    allowed_types: tuple[MimeType, ...] = tuple(EXTENSIONS)
    store: Literal["auto", "files", "storage"] = Field(
        "auto",
        description="Read at start-up. 'auto': in storage when it is shared (PostgreSQL, "
        "MongoDB), else files; 'files': in `dir`; 'storage': blobs in any backend.",
    )
    dir: str = Field(
        "", description="Read at start-up. Folder of the files; default <data_dir>/uploads."
    )


def sniff(data: bytes) -> str | None:
    """The MIME type of a file from its content, or None when it is not one we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return "text/plain" if _is_text(data) else None


def _is_text(data: bytes) -> bool:
    """UTF-8 all the way through, without control characters other than whitespace."""
    if not data or _CONTROL.search(data):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def safe_name(filename: str | None, mime: str) -> str:
    """A display name made of ``[A-Za-z0-9._-]`` with the canonical extension of ``mime``."""
    # Some clients percent-encode the name; Windows browsers may send a full path.
    base = unquote(filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", stem).strip("._-")[:60] or "file"
    return f"{stem}.{EXTENSIONS[mime]}"


def stored_mime(stored: str) -> str | None:
    """The type of a stored upload, from the canonical extension given at upload time."""
    ext = stored.rsplit(".", 1)[-1]
    return next((mime for mime, e in EXTENSIONS.items() if e == ext), None)


def upload_url(site_id: str, stored: str) -> str:
    return f"/v1/uploads/{site_id}/{stored}"


def display_name(stored: str) -> str:
    """The sanitised original name: the stored name without its random prefix."""
    return stored[23:]


async def _read_file_part(request: web.Request, limit: int) -> tuple[str | None, bytes]:
    """The ``file`` part's name and bytes; 400 on a malformed body, 413 past ``limit``."""
    try:
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and getattr(part, "name", None) != "file":
            await part.release()
            part = await reader.next()
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "missing_file", "the multipart body needs a `file` part")
        return part.filename, await read_bounded(part, limit)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        log.debug("malformed multipart upload: %s", exc)
        raise ApiError(400, "invalid_multipart", "the multipart body is malformed") from None


async def create_upload(call: Call) -> UploadOut:
    await call.require("upload.create", call.site_id)
    settings: UploadSettings = call.kernel.config.section("uploads")
    request = call.request
    if (request.content_length or 0) > settings.max_bytes + 64 * 1024:
        raise ApiError(413, "too_large", f"files are limited to {settings.max_bytes} bytes")
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the file as multipart/form-data")
    filename, data = await _read_file_part(request, settings.max_bytes)
    mime = sniff(data)
    if mime is None or mime not in settings.allowed_types:
        allowed = ", ".join(settings.allowed_types)
        raise ApiError(415, "unsupported_type", f"this kind of file is not accepted ({allowed})")
    name = safe_name(filename, mime)
    stored = f"{secrets.token_urlsafe(16)}-{name}"
    owner = owner_of(call.principal.kind, call.principal.id)
    await open_store(call.kernel).put(call.site_id, stored, data, mime, owner)
    log.info("upload %s/%s stored (%d bytes, %s)", call.site_id, stored, len(data), mime)
    url = upload_url(call.site_id, stored)
    return UploadOut(id=stored, url=url, name=name, size=len(data), mime=mime)


def owner_of(kind: str, principal_id: str) -> str:
    """What an upload records as its uploader: ``"visitor:<id>"``, ``"agent:<id>"``."""
    return f"{kind}:{principal_id}"


def _own_upload(call: Call) -> tuple[str, str, str]:
    """Site, stored name and type of the upload in the path; 404 outside the caller's site."""
    site_id, stored = call.params["site"], call.params["name"]
    mime = stored_mime(stored)
    if site_id != call.site_id or mime is None:
        raise ApiError(404, "not_found", "upload not found")
    return site_id, stored, mime


async def get_upload(call: Call) -> web.StreamResponse:
    """Serve a stored file to a caller of the same site, whole or by byte ranges."""
    site_id, stored, mime = _own_upload(call)
    # images, PDFs and text open in the browser (the chat's file cards open them in a tab);
    # sniffed types only, served with nosniff and a sandbox: none of them runs script here
    disposition = "inline" if mime in INLINE_TYPES or mime.startswith("image/") else "attachment"
    content_type = "text/plain; charset=utf-8" if mime == "text/plain" else mime
    headers = {
        "Content-Type": content_type,
        "Content-Disposition": f'{disposition}; filename="{display_name(stored)}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=86400",
        "ETag": f'"{stored[:22]}"',  # written once: the id is a strong validator
    }
    store = open_store(call.kernel)
    size = await store.size(site_id, stored)
    response = None
    if size is not None:

        async def read(offset: int, length: int) -> bytes | None:
            return await store.read(site_id, stored, offset, length)

        response = await ranges.send(call.request, size, read, headers)
    if response is None:
        raise ApiError(404, "not_found", "upload not found")
    return response


async def delete_upload(call: Call) -> None:
    """Delete a stored file for good (admins); messages that carried it keep a dead link."""
    site_id, stored, _ = _own_upload(call)
    await call.require("upload.delete", site_id)
    if not await open_store(call.kernel).delete(site_id, stored):
        raise ApiError(404, "not_found", "upload not found")
    log.info("upload %s/%s deleted by %s", site_id, stored, call.principal.id)


def attachment_upload(attachment: Any) -> str | None:
    """The stored name of a message's attachment (set by the attachment check), or None."""
    stored = attachment.get("id") if isinstance(attachment, dict) else None
    return stored if isinstance(stored, str) and _STORED.fullmatch(stored) else None


async def delete_attachments(kernel: Kernel, site_id: str, attachments: Iterable[Any]) -> int:
    """Delete the uploads these message attachments name; how many were there. Another
    message naming the same upload keeps a dead link (the bytes are gone: an erasure)."""
    store, deleted = open_store(kernel), 0
    for stored in {name for a in attachments if (name := attachment_upload(a))}:
        deleted += await store.delete(site_id, stored)
    return deleted


#: Plugin records ``<kept>/<merged>``: a contact merged into another (``POST
#: /v1/visitors/{id}/merge``), whose uploads an erasure of the kept one deletes too.
MERGED_KIND = "upload.merged"
#: Contacts one erasure follows through merges at most.
MERGED_MAX = 1000


async def note_merged(kernel: Kernel, site_id: str, kept_id: str, merged_id: str) -> None:
    """The merged contact's uploads go with the kept one's erasure from now on."""
    await kernel.storage.put_record(site_id, MERGED_KIND, f"{kept_id}/{merged_id}", {})


async def delete_visitor_uploads(kernel: Kernel, site_id: str, visitor_id: str) -> int:
    """Delete every upload the visitor made, sent or not, and those of the contacts merged
    into them (and into those); how many were still there."""
    storage, deleted, todo, seen, notes = kernel.storage, 0, [visitor_id], set(), []
    while todo and len(seen) < MERGED_MAX:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        deleted += await delete_owned(kernel, site_id, owner_of("visitor", current))
        prefix = f"{current}/"
        merged = await storage.list_records(site_id, MERGED_KIND, prefix=prefix, limit=MERGED_MAX)
        todo += [record.id[len(prefix) :] for record in merged]
        notes += [record.id for record in merged]
    for note in notes:  # once their uploads are gone: an erasure cut short finds them again
        await storage.delete_record(site_id, MERGED_KIND, note)
    return deleted


async def delete_owned(kernel: Kernel, site_id: str, owner: str) -> int:
    """Delete every upload recorded with this owner (:func:`owner_of`), sent or not; how
    many were still there."""
    store, deleted, seen = open_store(kernel), 0, None
    while names := await store.owned(site_id, owner):
        if names == seen:  # nothing changed since the last round: do not spin
            log.warning("uploads of %s in %s could not be deleted: %s", owner, site_id, names)
            break
        for stored in names:
            deleted += await store.delete(site_id, stored)
            await store.forget(site_id, owner, stored)
        seen = names
    return deleted

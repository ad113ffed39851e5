"""Downloads in pieces, with HTTP range requests (RFC 9110 section 14): one byte range.

- ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` answer ``206 Partial Content`` with
  ``Content-Range: bytes a-b/size``; an end past the last byte is cut to it, and a suffix
  ``-n`` longer than the file is the whole file;
- a range that starts at or past the end, ``bytes=-0``, or any range of an empty file
  answers ``416`` with ``Content-Range: bytes */size``;
- several ranges (``bytes=0-1,5-6``), another unit, a malformed header (``bytes=5-2``), or
  an ``If-Range`` other than the file's ``ETag`` (a date, say) get ``200`` and the whole
  file: RFC 9110 lets a server ignore ``Range``, and a client asking that much gets it all.

Every answer says ``Accept-Ranges: bytes``. The body is read and sent :data:`PIECE`
bytes at a time, so neither a range nor a whole file is held in memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from kefu.core.web_app import error_response

log = logging.getLogger(__name__)

#: Bytes read from the store and written to the client at a time.
PIECE = 256 * 1024
UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"
# the unit is case-insensitive; more than 18 digits is no file here (ignored: whole body)
_ONE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.IGNORECASE)

Span = tuple[int, int] | Literal["unsatisfiable"] | None
Reader = Callable[[int, int], Awaitable[bytes | None]]


def byte_range(header: str | None, size: int) -> Span:
    """``(first, last)`` (inclusive) of a ``Range`` header on a file of ``size`` bytes;
    :data:`UNSATISFIABLE` for a ``416``; None to send the whole file."""
    match = _ONE_RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None  # "bytes=-": malformed
        suffix = int(last)
        return (max(size - suffix, 0), size - 1) if suffix and size else UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None  # "bytes=5-2": malformed, ignored
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last), size - 1) if last else size - 1


async def send(
    request: web.Request, size: int, read: Reader, headers: dict[str, str]
) -> web.StreamResponse | None:
    """The file of ``size`` bytes that ``read(offset, length)`` returns, whole or the range
    asked for; None when ``read`` finds nothing (the caller's 404)."""
    if_range = request.headers.get("If-Range")
    honoured = if_range is None or if_range == headers.get("ETag")
    span = byte_range(request.headers.get("Range"), size) if honoured else None
    headers = {**headers, "Accept-Ranges": "bytes"}
    if span == UNSATISFIABLE:
        response = error_response(416, "range_not_satisfiable", f"the file has {size} bytes")
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    start, end = span if span is not None else (0, size - 1)
    piece = await read(start, min(PIECE, end + 1 - start))
    if piece is None:
        return None
    response = web.StreamResponse(status=206 if span else 200, headers=headers)
    response.content_length = end + 1 - start
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    await response.prepare(request)
    at = start
    while piece:
        await response.write(piece)
        at += len(piece)
        if at > end:
            break
        piece = await read(at, min(PIECE, end + 1 - at))
    if at <= end:  # deleted or cut while being sent: the client must not take it as whole
        log.warning("a download ended at byte %d of %d: the file went away", at, end + 1)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response

"""Downloads in pieces, with HTTP range requests (RFC 9110 section 14).

- ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` answer ``206 Partial Content`` with
  ``Content-Range: bytes a-b/size``; an end past the last byte is cut to it, and a suffix
  ``-n`` longer than the file is the whole file;
- several ranges (``bytes=0-9,20-29``) answer ``206`` with a ``multipart/byteranges`` body
  (RFC 9110 section 14.6), one part per range with its ``Content-Type`` and
  ``Content-Range``, in the order of the file: ranges that overlap or touch are coalesced
  into one (several that become one answer as a single range does), ranges that start past
  the end are left out;
- no satisfiable range (one that starts at or past the end, ``bytes=-0``, any range of an
  empty file) answers ``416`` with ``Content-Range: bytes */size``;
- more than :data:`MAX_RANGES` ranges, another unit, a malformed header (``bytes=5-2``, a
  malformed item among several), or an ``If-Range`` other than the file's ``ETag`` (a date,
  say) get ``200`` and the whole file: RFC 9110 lets a server ignore ``Range``, and a client
  asking that much gets it all.

Every answer says ``Accept-Ranges: bytes``. The body is read and sent :data:`PIECE`
bytes at a time, so neither a range nor a whole file is held in memory.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from kefu.core.web_app import error_response

log = logging.getLogger(__name__)

#: Bytes read from the store and written to the client at a time.
PIECE = 256 * 1024
#: Most ranges one request may ask for (before coalescing); past it the whole file is sent.
MAX_RANGES = 16
CRLF = "\r\n"
UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"
_UNIT = re.compile(r"bytes=", re.IGNORECASE)  # the unit is case-insensitive
# more than 18 digits is no file here (ignored: whole body)
_ONE_RANGE = re.compile(r"(\d{0,18})-(\d{0,18})")

Span = tuple[int, int]
Spans = list[Span] | Literal["unsatisfiable"] | None
Reader = Callable[[int, int], Awaitable[bytes | None]]


def _span(spec: str, size: int) -> Span | Literal["unsatisfiable"] | None:
    """One range-spec: ``(first, last)``, UNSATISFIABLE, or None when malformed."""
    match = _ONE_RANGE.fullmatch(spec)
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None  # "-": malformed
        suffix = int(last)
        return (max(size - suffix, 0), size - 1) if suffix and size else UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None  # "5-2": malformed, ignored
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last), size - 1) if last else size - 1


def byte_ranges(header: str | None, size: int) -> Spans:
    """The ``(first, last)`` spans (inclusive, in file order, coalesced) of a ``Range``
    header on a file of ``size`` bytes; :data:`UNSATISFIABLE` for a ``416``; None to send
    the whole file."""
    header = header.strip() if header else ""
    if not _UNIT.match(header):
        return None
    specs = [s.strip() for s in header[len("bytes=") :].split(",")]
    specs = [s for s in specs if s]  # empty list elements are allowed and ignored
    if not specs or len(specs) > MAX_RANGES:
        return None
    spans: list[Span] = []
    for spec in specs:
        span = _span(spec, size)
        if span is None:
            return None
        if span != UNSATISFIABLE:
            spans.append(span)
    if not spans:
        return UNSATISFIABLE
    merged = [min(spans)]
    for first, last in sorted(spans)[1:]:
        if first <= merged[-1][1] + 1:  # overlapping or touching: one range
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


async def _send_span(response: web.StreamResponse, read: Reader, span: Span, piece: bytes) -> bool:
    """Write bytes ``span`` (``piece`` being its first read); False when the file went away."""
    at, end = span
    while at <= end:
        if not piece:
            log.warning("a download ended at byte %d of %d: the file went away", at, end + 1)
            return False
        await response.write(piece)
        at += len(piece)
        if at <= end:
            piece = await read(at, min(PIECE, end + 1 - at)) or b""
    return True


def _part_heads(boundary: str, content_type: str, parts: list[Span], size: int) -> list[bytes]:
    """What goes before each part of a ``multipart/byteranges`` body (RFC 9110 14.6)."""
    return [
        f"{'--' if n == 0 else CRLF + '--'}{boundary}{CRLF}Content-Type: {content_type}{CRLF}"
        f"Content-Range: bytes {first}-{last}/{size}{CRLF}{CRLF}".encode()
        for n, (first, last) in enumerate(parts)
    ]


async def send(
    request: web.Request, size: int, read: Reader, headers: dict[str, str]
) -> web.StreamResponse | None:
    """The file of ``size`` bytes that ``read(offset, length)`` returns, whole or the ranges
    asked for; None when ``read`` finds nothing (the caller's 404)."""
    if_range = request.headers.get("If-Range")
    honoured = if_range is None or if_range == headers.get("ETag")
    spans = byte_ranges(request.headers.get("Range"), size) if honoured else None
    headers = {**headers, "Accept-Ranges": "bytes"}
    if spans == UNSATISFIABLE:
        response = error_response(416, "range_not_satisfiable", f"the file has {size} bytes")
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    parts = spans if spans is not None else [(0, size - 1)]
    start, end = parts[0]
    piece = await read(start, min(PIECE, end + 1 - start))
    if piece is None:
        return None
    response = web.StreamResponse(status=206 if spans else 200, headers=headers)
    if len(parts) == 1:
        response.content_length = end + 1 - start
        if spans is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        await response.prepare(request)
        whole = await _send_span(response, read, parts[0], piece)
    else:
        boundary = secrets.token_hex(16)
        heads = _part_heads(boundary, headers.get("Content-Type", ""), parts, size)
        tail = f"\r\n--{boundary}--\r\n".encode()
        response.headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        body = sum(last + 1 - first for first, last in parts)
        response.content_length = sum(map(len, heads)) + body + len(tail)
        await response.prepare(request)
        whole = True
        for n, (head, span) in enumerate(zip(heads, parts, strict=True)):
            if n:
                piece = await read(span[0], min(PIECE, span[1] + 1 - span[0])) or b""
            await response.write(head)
            whole = await _send_span(response, read, span, piece)
            if not whole:
                break
        if whole:
            await response.write(tail)
    if not whole:  # deleted or cut while being sent: the client must not take it as whole
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response

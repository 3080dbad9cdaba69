"""Serve a file with ETag, 304, HEAD and Range."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import BinaryIO

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    StreamingHttpResponse,
)
from django.utils.cache import get_conditional_response
from django.utils.http import (
    content_disposition_header,
    http_date,
    parse_http_date_safe,
    quote_etag,
)

CHUNK_SIZE = 1024 * 1024
#: Whole files up to this size are read and sent as one body instead of streamed.
SMALL_FILE = 64 * 1024
#: Cache-Control of a file that never changes under its URL (a package file).
IMMUTABLE = "public, max-age=31536000, immutable"
#: The request headers get_conditional_response reads (RFC 9110 §13.1), as WSGI keys.
CONDITIONAL_HEADERS = (
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)
# One range-spec only; the unit is case-insensitive (RFC 9110 §14.1).
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


class _FileChunks:
    """Stream `length` bytes from `start`; Django calls close() when the response is done."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        self._file, self._start, self._length = file, start, length
        # Bound now: Django's WSGI handler replaces `file.close` when a file wrapper sends it.
        self._close = file.close

    def __iter__(self) -> Iterator[bytes]:
        if self._start:
            self._file.seek(self._start)
        remaining = self._length
        while remaining > 0:
            chunk = self._file.read(min(CHUNK_SIZE, remaining))
            if not chunk:  # file shorter than `size`: stop rather than spin forever
                break
            remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._close()


def _parse_range(header: str, size: int) -> range | None:
    """The requested byte span; None = ignore the header, an empty range = unsatisfiable."""
    match = _RANGE_RE.fullmatch(header.strip())
    if not match:
        # Malformed or multi-range ("bytes=0-1,5-6"): RFC 9110 §14.2 lets us ignore Range.
        # nginx would answer multipart/byteranges; no package client needs that, so we send
        # the full 200 instead of carrying a multipart encoder.
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # syntactically invalid range-spec: ignore, not 416
        end = min(int(last), size - 1) if last else size - 1
        return range(start, end + 1) if start < size else range(0)
    if last:  # suffix form "bytes=-n": the last n bytes; "-0" selects nothing (416)
        return range(max(size - int(last), 0), size) if int(last) else range(0)
    return None  # "bytes=-"


def _if_range_allows(value: str | None, etag: str, mtime: int | None) -> bool:
    """If-Range must match exactly (strong comparison) or the client gets the whole file."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # a weak tag never equals our strong one, as §13.1.5 requires
    date = parse_http_date_safe(value)
    return date is not None and date == mtime


def file_response(
    request: HttpRequest,
    open_file: Callable[[], BinaryIO],
    *,
    size: int,
    etag: str,
    content_type: str,
    last_modified: datetime | None = None,
    cache_control: str,
    filename: str | None = None,
    allow_ranges: bool = True,
) -> HttpResponseBase:
    """Answer GET/HEAD for a stored file; `open_file` is called only when a body is sent.

    `etag` is a bare digest (sent quoted). Naive `last_modified` values are taken as UTC.
    """
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])

    quoted = quote_etag(etag)
    # HTTP dates have whole seconds; truncating keeps If-Modified-Since/If-Range comparable.
    mtime = calendar.timegm(last_modified.utctimetuple()) if last_modified else None
    headers = {
        "ETag": quoted,
        "Cache-Control": cache_control,
        "Accept-Ranges": "bytes" if allow_ranges else "none",
    }
    if mtime is not None:
        headers["Last-Modified"] = http_date(mtime)
    if filename:
        headers["Content-Disposition"] = content_disposition_header(True, filename)

    # Django applies RFC 9110 §13.2.2 precedence (If-Match/If-Unmodified-Since -> 412,
    # If-None-Match over If-Modified-Since -> 304 for GET/HEAD) and copies ETag,
    # Cache-Control and Last-Modified onto the 304. It only reads headers, so a bodiless
    # stand-in is enough and the file stays closed. Made only when needed: an unconditional
    # GET (most of a mirror's 200s) pays for one response object, not two.
    if any(header in request.META for header in CONDITIONAL_HEADERS):
        probe = HttpResponse(content_type=content_type, headers=headers)
        conditional = get_conditional_response(
            request, etag=quoted, last_modified=mtime, response=probe
        )
        if conditional is not probe:
            return conditional

    if request.method == "HEAD":
        # Range handling is defined for GET only (RFC 9110 §14.2): HEAD describes the whole.
        return HttpResponse(
            content_type=content_type, headers={**headers, "Content-Length": str(size)}
        )

    span, status = range(size), 200
    # META, not `request.headers`: building that mapping of every header costs more than
    # the rest of a small file's answer (the hot path of serving).
    range_header = request.META.get("HTTP_RANGE") if allow_ranges else None
    if range_header and _if_range_allows(request.META.get("HTTP_IF_RANGE"), quoted, mtime):
        requested = _parse_range(range_header, size)
        if requested is not None and not requested:
            return HttpResponse(status=416, headers={"Content-Range": f"bytes */{size}"})
        if requested is not None:
            span, status = requested, 206
            headers["Content-Range"] = f"bytes {span.start}-{span.stop - 1}/{size}"

    headers["Content-Length"] = str(len(span))
    file = open_file()
    if status == 200 and size <= SMALL_FILE:
        # Most index files (project pages, small repodata): one read, and the body goes out
        # with the headers, where sending a file costs the server more calls than the bytes.
        with file:
            return HttpResponse(file.read(size), content_type=content_type, headers=headers)
    response = StreamingHttpResponse(
        _FileChunks(file, span.start, len(span)),
        status=status,
        content_type=content_type,
        headers=headers,
    )
    if status == 200:
        # The whole file: a WSGI server with `wsgi.file_wrapper` sends it itself (gunicorn
        # with sendfile(2) for a local file); others, and tests, iterate the chunks.
        response.file_to_stream, response.block_size = file, CHUNK_SIZE
    return response

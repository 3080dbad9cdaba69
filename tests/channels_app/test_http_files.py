from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import RequestFactory
from django.utils.http import http_date

from channels_app import http_files
from channels_app.http_files import file_response
from tests.fixtures.http import response_body

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
SIZE = len(DATA)
ETAG = "ab" * 32
MODIFIED = datetime(2024, 5, 1, 12, 30, 45, 678000, tzinfo=UTC)
CACHE = "public, max-age=31536000, immutable"

rf = RequestFactory()


@pytest.fixture(autouse=True)
def _no_connection_cleanup():
    """Closing a response fires request_finished; as in Django's test client, it must not
    close database connections (these tests use none, and may not touch one)."""
    request_finished.disconnect(close_old_connections)
    yield
    request_finished.connect(close_old_connections)


class Tracker:
    """open_file stand-in that records calls and whether the file was closed."""

    def __init__(self, data: bytes = DATA) -> None:
        self.data, self.calls, self.files = data, 0, []

    def __call__(self) -> io.BytesIO:
        self.calls += 1
        self.files.append(io.BytesIO(self.data))
        return self.files[-1]


def _must_not_open() -> io.BytesIO:
    raise AssertionError("open_file must not be called")


def serve(request, open_file=None, **kwargs):
    options = {
        "size": SIZE,
        "etag": ETAG,
        "content_type": "application/octet-stream",
        "last_modified": MODIFIED,
        "cache_control": CACHE,
    }
    options.update(kwargs)
    return file_response(request, open_file or Tracker(), **options)


def body(response) -> bytes:
    """The body, then close() as a WSGI server would (Django's handler is not involved)."""
    content = response_body(response)
    response.close()
    return content


def test_get_sends_full_body_with_headers():
    opener = Tracker()
    response = serve(rf.get("/f"), opener)
    assert response.status_code == 200
    assert body(response) == DATA
    assert opener.calls == 1 and opener.files[0].closed
    assert response["Content-Length"] == str(SIZE)
    assert response["ETag"] == f'"{ETAG}"'
    assert response["Last-Modified"] == "Wed, 01 May 2024 12:30:45 GMT"
    assert response["Cache-Control"] == CACHE
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "application/octet-stream"
    assert "Content-Disposition" not in response
    assert "Content-Range" not in response


def test_a_small_whole_file_is_read_at_once_and_closed():
    opener = Tracker()
    response = serve(rf.get("/f"), opener)
    assert not response.streaming  # one body, sent with the headers
    assert opener.files[0].closed  # before the response is even sent
    assert response.content == DATA


def test_a_larger_whole_file_is_handed_to_the_server_to_send():
    data = bytes(range(256)) * (http_files.SMALL_FILE // 256 + 1)
    opener = Tracker(data)
    response = serve(rf.get("/f"), opener, size=len(data))
    assert response.streaming
    assert response.file_to_stream is opener.files[0]  # for wsgi.file_wrapper (sendfile)
    assert not opener.files[0].closed
    assert body(response) == data
    assert opener.files[0].closed


def test_get_streams_in_chunks(monkeypatch):
    assert http_files.CHUNK_SIZE == 1024 * 1024
    monkeypatch.setattr(http_files, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(http_files, "SMALL_FILE", 0)
    response = serve(rf.get("/f"))
    chunks = list(response.streaming_content)
    assert [len(c) for c in chunks] == [4096, 4096, 2048]
    assert b"".join(chunks) == DATA


def test_without_last_modified_and_ranges_disabled():
    response = serve(rf.get("/f", HTTP_RANGE="bytes=0-9"), last_modified=None, allow_ranges=False)
    assert response.status_code == 200
    assert body(response) == DATA
    assert response["Accept-Ranges"] == "none"
    assert "Last-Modified" not in response


def test_head_sends_headers_without_opening_file():
    response = serve(rf.head("/f"), _must_not_open)
    assert response.status_code == 200
    assert response.content == b""
    assert response["Content-Length"] == str(SIZE)
    assert response["ETag"] == f'"{ETAG}"'
    assert response["Last-Modified"] == http_date(MODIFIED.timestamp())
    assert response["Cache-Control"] == CACHE
    assert response["Accept-Ranges"] == "bytes"


def test_head_ignores_range():
    response = serve(rf.head("/f", HTTP_RANGE="bytes=0-9"), _must_not_open)
    assert response.status_code == 200
    assert response["Content-Length"] == str(SIZE)


@pytest.mark.parametrize(
    "if_none_match",
    [
        f'"{ETAG}"',
        f'"other", "{ETAG}"',
        "*",
        f'W/"{ETAG}"',
    ],
    ids=["exact", "list", "star", "weak"],
)
@pytest.mark.parametrize("method", ["get", "head"])
def test_if_none_match_gives_304(method, if_none_match):
    request = getattr(rf, method)("/f", HTTP_IF_NONE_MATCH=if_none_match)
    response = serve(request, _must_not_open)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == f'"{ETAG}"'
    assert response["Cache-Control"] == CACHE


def test_if_none_match_mismatch_gives_200():
    response = serve(rf.get("/f", HTTP_IF_NONE_MATCH='"other"'))
    assert response.status_code == 200
    assert body(response) == DATA


def test_if_none_match_takes_precedence_over_if_modified_since():
    request = rf.get(
        "/f", HTTP_IF_NONE_MATCH='"other"', HTTP_IF_MODIFIED_SINCE=http_date(MODIFIED.timestamp())
    )
    response = serve(request)
    assert response.status_code == 200
    assert body(response) == DATA


@pytest.mark.parametrize("delta", [0, 60])
def test_if_modified_since_not_older_gives_304(delta):
    # The sub-second part of MODIFIED must not make the file look newer than its HTTP date.
    since = http_date(MODIFIED.timestamp() + delta)
    response = serve(rf.get("/f", HTTP_IF_MODIFIED_SINCE=since), _must_not_open)
    assert response.status_code == 304
    assert response["Last-Modified"] == "Wed, 01 May 2024 12:30:45 GMT"


def test_if_modified_since_older_gives_200():
    since = http_date((MODIFIED - timedelta(seconds=1)).timestamp())
    response = serve(rf.get("/f", HTTP_IF_MODIFIED_SINCE=since))
    assert response.status_code == 200
    assert body(response) == DATA


def test_if_match_mismatch_gives_412():
    response = serve(rf.get("/f", HTTP_IF_MATCH='"other"'), _must_not_open)
    assert response.status_code == 412


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=10000-", 10000, SIZE - 1),
        ("bytes=-100", SIZE - 100, SIZE - 1),
        ("bytes=0-999999", 0, SIZE - 1),  # last-pos past the end is clamped
        ("bytes=-999999", 0, SIZE - 1),  # suffix longer than the file
        ("BYTES=5-5", 5, 5),
    ],
)
def test_range_gives_206_with_exact_bytes(spec, start, end):
    opener = Tracker()
    response = serve(rf.get("/f", HTTP_RANGE=spec), opener)
    assert response.status_code == 206
    assert body(response) == DATA[start : end + 1]
    assert opener.files[0].closed
    assert response["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response["Content-Length"] == str(end - start + 1)
    assert response["ETag"] == f'"{ETAG}"'
    assert response["Cache-Control"] == CACHE


def test_range_streams_in_chunks(monkeypatch):
    monkeypatch.setattr(http_files, "CHUNK_SIZE", 1000)
    response = serve(rf.get("/f", HTTP_RANGE="bytes=100-2599"))
    chunks = list(response.streaming_content)
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert b"".join(chunks) == DATA[100:2600]


@pytest.mark.parametrize(
    ("spec", "size"),
    [(f"bytes={SIZE}-", SIZE), (f"bytes={SIZE + 5}-{SIZE + 9}", SIZE), ("bytes=-0", SIZE)]
    + [("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_unsatisfiable_range_gives_416(spec, size):
    response = serve(rf.get("/f", HTTP_RANGE=spec), _must_not_open, size=size)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=0-1,5-6",  # multi-range: we choose a full 200 over multipart/byteranges
        "bytes=5-3",
        "bytes=-",
        "bytes=a-b",
        "items=0-5",
        "0-5",
    ],
)
def test_multi_or_malformed_range_gives_full_200(spec):
    response = serve(rf.get("/f", HTTP_RANGE=spec))
    assert response.status_code == 200
    assert body(response) == DATA
    assert response["Content-Length"] == str(SIZE)
    assert "Content-Range" not in response


@pytest.mark.parametrize(
    "if_range",
    [
        '"other"',
        f'W/"{ETAG}"',  # weak tags never satisfy If-Range
        http_date(MODIFIED.timestamp() - 1),
        "not a date",
    ],
)
def test_if_range_mismatch_gives_full_200(if_range):
    response = serve(rf.get("/f", HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=if_range))
    assert response.status_code == 200
    assert body(response) == DATA


def test_if_range_date_without_last_modified_gives_full_200():
    request = rf.get("/f", HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=http_date(MODIFIED.timestamp()))
    response = serve(request, last_modified=None)
    assert response.status_code == 200


@pytest.mark.parametrize("if_range", [f'"{ETAG}"', http_date(MODIFIED.timestamp())])
def test_if_range_match_gives_206(if_range):
    response = serve(rf.get("/f", HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=if_range))
    assert response.status_code == 206
    assert body(response) == DATA[:10]
    assert response["Content-Range"] == f"bytes 0-9/{SIZE}"


def test_if_range_mismatch_skips_416():
    request = rf.get("/f", HTTP_RANGE=f"bytes={SIZE}-", HTTP_IF_RANGE='"other"')
    response = serve(request)
    assert response.status_code == 200
    assert body(response) == DATA


@pytest.mark.parametrize("method", ["post", "put", "delete", "options"])
def test_other_methods_give_405(method):
    response = serve(getattr(rf, method)("/f"), _must_not_open)
    assert response.status_code == 405
    assert set(response["Allow"].split(", ")) == {"GET", "HEAD"}


def test_content_disposition_quotes_filename():
    response = serve(rf.get("/f"), filename='my "pkg"\\1.0.tar.gz')
    assert response["Content-Disposition"] == r'attachment; filename="my \"pkg\"\\1.0.tar.gz"'
    body(response)


def test_content_disposition_non_ascii_filename():
    response = serve(rf.head("/f"), _must_not_open, filename="pkg-é.whl")
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''pkg-%C3%A9.whl"


def test_file_closed_when_response_closed_unread():
    opener = Tracker()
    response = serve(rf.get("/f", HTTP_RANGE="bytes=0-9"), opener)
    response.close()
    assert opener.files[0].closed

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage

from channels_app import storage
from channels_app.models import Artifact
from channels_app.publishing import collect_garbage
from psm.http import UpstreamClient
from tests.fixtures.loopback import FileHandler, LoopbackServer


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files")},
        },
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.django_db
def test_store_verifies_and_addresses_by_sha256():
    data = b"package bytes" * 1000
    artifact = storage.store([data[:100], data[100:]], sha256=_sha(data), size=len(data))
    assert artifact.sha256 == _sha(data)
    assert artifact.size == len(data)
    assert artifact.storage_path.endswith(_sha(data))
    with storage.open_artifact(artifact) as handle:
        assert handle.read() == data


@pytest.mark.django_db
def test_the_same_bytes_are_stored_once():
    first = storage.store([b"same"], sha256=_sha(b"same"))
    second = storage.store([b"same"])
    assert first.pk == second.pk
    assert Artifact.objects.count() == 1
    folder = default_storage.path(first.storage_path).rsplit("/", 1)[0]
    assert len(default_storage.listdir(folder)[1]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("expected", "message"),
    [
        ({"sha256": "0" * 64}, "sha256"),
        ({"md5": "0" * 32}, "md5"),
        ({"size": 3}, "expected 3 bytes"),
        ({"size": 100}, "size 4 does not match"),
        ({"max_bytes": 2}, "more than"),
    ],
)
def test_mismatching_bytes_are_refused_and_leave_nothing(expected, message):
    with pytest.raises(storage.IntegrityError, match=message):
        storage.store([b"data"], **expected)
    assert Artifact.objects.count() == 0
    assert not default_storage.exists(f"blobs/{_sha(b'data')[:2]}")
    assert default_storage.listdir("tmp")[1] == []


@pytest.mark.django_db
def test_garbage_collection_removes_what_killed_downloads_left_behind(settings, tmp_path):
    """A worker killed mid-download leaves its temporary file (and a web worker its passive
    partial file): collected once nothing wrote to them for the grace period."""
    settings.DATA_DIR = tmp_path / "data"
    old, fresh = time.time() - 7200, time.time()
    files = {
        os.path.join(storage.tmp_dir(), "tmpkilled"): old,
        os.path.join(storage.tmp_dir(), "tmpwriting"): fresh,
        os.path.join(storage.locks_dir(), "package-1.part"): old,
        os.path.join(storage.locks_dir(), "package-2.part"): fresh,
        os.path.join(storage.locks_dir(), "package-1.lock"): old,  # locks stay
    }
    for path, mtime in files.items():
        with open(path, "wb") as out:
            out.write(b"x")
        os.utime(path, (mtime, mtime))

    collect_garbage(older_than=timedelta(hours=1))

    left = {os.path.basename(path) for path in files if os.path.exists(path)}
    assert left == {"tmpwriting", "package-2.part", "package-1.lock"}


# --- a file streamed to a client while it is stored (a passive mirror's first request) ---------

MIB = 1024 * 1024


class _UnsizedHandler(FileHandler):
    """Sends files without Content-Length, ending the body by closing the connection."""

    def _send_headers(self, status: int, headers: dict[str, str]) -> None:
        headers = {k: v for k, v in headers.items() if k != "Content-Length"}
        self.close_connection = True
        super()._send_headers(status, {**headers, "Connection": "close"})


class _UnsizedServer(LoopbackServer):
    handler = _UnsizedHandler


def _stream(url: str, **expected) -> tuple[list[tuple[bytes, bool]], tuple]:
    """Iterate a StreamedDownload of `url`: each chunk with whether it was verified by then."""
    client = UpstreamClient(waiting=True)
    download = storage.StreamedDownload(client, url, **expected)
    try:
        chunks = [(chunk, download.result is not None) for chunk in download]
    finally:
        download.close()
        client.close()
    return chunks, download.result


@pytest.mark.django_db
@pytest.mark.parametrize("sized", [True, False], ids=["length known", "length unknown"])
def test_a_streamed_file_goes_out_as_it_arrives_and_its_last_chunk_only_once_stored(
    upstream, tmp_path, sized
):
    data = os.urandom(3 * MIB + 1234)
    expected = {"sha256": _sha(data)}
    if sized:
        upstream.write("pkg.conda", data)
        chunks, result = _stream(f"{upstream.url}/pkg.conda", **expected, size=len(data))
    else:
        (tmp_path / "unsized").mkdir()
        with _UnsizedServer(tmp_path / "unsized") as server:
            server.write("pkg.conda", data)
            chunks, result = _stream(f"{server.url}/pkg.conda", **expected)

    assert b"".join(chunk for chunk, _ in chunks) == data
    assert [verified for _, verified in chunks] == [False] * (len(chunks) - 1) + [True]
    assert result == (_sha(data), len(data))


def test_put_bytes_stores_a_small_file_once_readable_by_all(tmp_path):
    data = b"<html>a project page</html>"
    assert storage.put_bytes(data) == (_sha(data), len(data))
    path = default_storage.path(storage.blob_path(_sha(data)))
    with open(path, "rb") as stored:
        assert stored.read() == data
    assert os.stat(path).st_mode & 0o777 == 0o644  # as Django stores files, not mkstemp's
    os.utime(path, (1, 1))
    assert storage.put_bytes(data) == (_sha(data), len(data))
    assert os.stat(path).st_mtime == 1  # already stored: not written again
    assert os.listdir(storage.tmp_dir()) == []


def test_put_bytes_makes_a_removed_folder_again():
    first = b"first"
    storage.put_bytes(first)
    folder = os.path.dirname(default_storage.path(storage.blob_path(_sha(first))))
    os.unlink(os.path.join(folder, _sha(first)))
    os.rmdir(folder)
    storage.put_bytes(first)
    assert default_storage.exists(storage.blob_path(_sha(first)))


def test_put_bytes_goes_through_django_on_other_storages(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    data = b"a page in memory"
    assert storage.put_bytes(data) == (_sha(data), len(data))
    assert storage.put_bytes(data) == (_sha(data), len(data))
    with default_storage.open(storage.blob_path(_sha(data))) as stored:
        assert stored.read() == data


@pytest.mark.django_db
def test_a_failed_write_beside_the_stream_cuts_it_short_and_stores_nothing(upstream, monkeypatch):
    data = os.urandom(3 * MIB)
    upstream.write("pkg.conda", data)
    absorb, calls = storage.BlobWriter.absorb, []

    def failing(self, chunk: bytes) -> int:
        calls.append(len(chunk))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return absorb(self, chunk)

    monkeypatch.setattr(storage.BlobWriter, "absorb", failing)
    received = bytearray()
    client = UpstreamClient(waiting=True)
    download = storage.StreamedDownload(
        client, f"{upstream.url}/pkg.conda", sha256=_sha(data), size=len(data)
    )
    with pytest.raises(OSError, match="No space left"):
        for chunk in download:
            received += chunk
    download.close()
    client.close()

    assert len(received) < len(data) and download.result is None
    assert not default_storage.exists(storage.blob_path(_sha(data)))
    assert not _storers_alive()


@pytest.mark.django_db
def test_a_stream_abandoned_midway_stops_its_storer_and_leaves_no_file(upstream, tmp_path):
    data = os.urandom(4 * MIB)
    upstream.write("pkg.conda", data)
    partial = tmp_path / "pkg.part"
    client = UpstreamClient(waiting=True)
    download = storage.StreamedDownload(
        client, f"{upstream.url}/pkg.conda", sha256=_sha(data), size=len(data), partial=partial
    )
    first = next(iter(download))  # the client goes away after one chunk
    download.close()
    client.close()

    assert first == data[: len(first)]
    assert not _storers_alive()
    assert not partial.exists()
    assert not default_storage.exists(storage.blob_path(_sha(data)))


def _storers_alive() -> bool:
    return any(thread.name == "psm-storer" for thread in threading.enumerate())


@pytest.mark.parametrize("size", [10, storage.SMALL_BLOB, storage.SMALL_BLOB + 1, 3_000_000])
def test_a_buffered_writer_stores_small_and_large_files_alike(size):
    data = os.urandom(size)
    with storage.BufferedBlobWriter() as writer:
        for start in range(0, size, 300_000):
            writer.write(data[start : start + 300_000])
        assert writer.commit() == (_sha(data), size)
    with default_storage.open(storage.blob_path(_sha(data))) as stored:
        assert stored.read() == data
    assert os.listdir(storage.tmp_dir()) == []


def test_a_buffered_writer_left_without_commit_stores_nothing():
    with pytest.raises(RuntimeError), storage.BufferedBlobWriter() as writer:
        writer.write(b"x" * (storage.SMALL_BLOB + 10))
        raise RuntimeError("the render failed")
    assert not default_storage.exists(storage.blob_path(_sha(b"x" * (storage.SMALL_BLOB + 10))))
    assert os.listdir(storage.tmp_dir()) == []


def test_rendered_files_are_stored_by_threads_and_settled_before_they_are_read(monkeypatch):
    """Small files go to the storing threads in batches (at most `PENDING` waiting), a large
    one is written as it is emitted; after `settle` every path has its blob, as a plain write
    gives."""
    from channels_app.publishing import Rendered

    monkeypatch.setattr(Rendered, "PENDING", 3)
    monkeypatch.setattr(Rendered, "BATCH", 2)
    monkeypatch.setattr(storage, "SMALL_BLOB", 1000)
    rendered = Rendered()
    pages = {f"simple/p{i}/index.html": f"page {i}".encode() * (i + 1) for i in range(20)}
    pages["big"] = b"x" * 5000
    for path, data in pages.items():
        with rendered.emit(path, "text/html") as out:
            out.write(data[:10])
            out.write(data[10:])
    assert len(rendered) >= len(pages) - 5  # the others still being stored or batched
    rendered.settle()
    assert rendered == {path: (_sha(data), len(data), "text/html") for path, data in pages.items()}
    for path, data in pages.items():
        with default_storage.open(storage.blob_path(rendered[path][0])) as stored:
            assert stored.read() == data


def test_a_file_that_cannot_be_stored_fails_the_settle(monkeypatch):
    from channels_app.publishing import Rendered

    def full(items):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "put_many", full)
    rendered = Rendered()
    with rendered.emit("simple/index.html", "text/html") as out:
        out.write(b"<html>")
    with pytest.raises(OSError, match="No space"):
        rendered.settle()
    assert rendered == {} and rendered._pool is None


class _StallingHandler(FileHandler):
    """Sends the first 2 MiB of a file, then waits for the server's `resume` (at most 30 s)."""

    upstream: _StallingServer

    def write_body(self, body: bytes) -> None:
        self.wfile.write(body[: 2 * MIB])
        self.wfile.flush()
        self.upstream.resume.wait(timeout=30)
        self.upstream.resumed.set()
        self.wfile.write(body[2 * MIB :])


class _StallingServer(LoopbackServer):
    handler = _StallingHandler

    def __init__(self, root) -> None:
        self.resume, self.resumed = threading.Event(), threading.Event()
        super().__init__(root)


@pytest.mark.django_db
def test_a_stream_abandoned_while_upstream_stalls_is_released_without_waiting_for_it(tmp_path):
    """The thread receiving ahead of the client is waiting on upstream: closing wakes it."""
    data = os.urandom(4 * MIB)
    (tmp_path / "stalling").mkdir()
    with _StallingServer(tmp_path / "stalling") as server:
        server.write("pkg.conda", data)
        partial = tmp_path / "pkg.part"
        client = UpstreamClient(waiting=True)
        download = storage.StreamedDownload(
            client, f"{server.url}/pkg.conda", sha256=_sha(data), size=len(data), partial=partial
        )
        first = next(iter(download))
        download.close()
        client.close()
        released_before_upstream_went_on = not server.resumed.is_set()
        server.resume.set()

    assert first == data[: len(first)]
    assert released_before_upstream_went_on
    assert not _threads_alive("psm-receiver") and not _storers_alive()
    assert not partial.exists()
    assert not default_storage.exists(storage.blob_path(_sha(data)))


@pytest.mark.django_db
def test_a_streamed_file_is_received_ahead_of_a_slow_client_but_boundedly(upstream):
    """While the client does not take the next chunk, upstream's bytes are read ahead (and
    stored) up to the bound, not to the end; then the whole file goes out, verified."""
    data = os.urandom(20 * MIB)
    upstream.write("pkg.conda", data)
    client = UpstreamClient(waiting=True)
    download = storage.StreamedDownload(
        client, f"{upstream.url}/pkg.conda", sha256=_sha(data), size=len(data)
    )
    try:
        chunks = iter(download)
        received = bytearray(next(chunks))
        _until(lambda: download._writer.size >= 4 * MIB)  # read ahead of the client
        ahead = download._writer.size
        received += b"".join(chunks)
    finally:
        download.close()
        client.close()
    assert ahead < len(data)  # bounded: the receiver waits for the client
    assert bytes(received) == data and download.result == (_sha(data), len(data))


def _until(condition) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


def _threads_alive(name: str) -> bool:
    return any(thread.name == name for thread in threading.enumerate())


@pytest.mark.django_db
def test_a_streamed_file_of_unknown_length_stops_at_the_limit_before_its_bytes_go_out(
    settings, tmp_path
):
    """The receiving thread counts each chunk before the client may have it: past
    PSM_MAX_FILE_BYTES the stream fails, having handed out no byte beyond the limit."""
    settings.PSM_MAX_FILE_BYTES = 2 * MIB
    data = os.urandom(3 * MIB)
    (tmp_path / "unsized").mkdir()
    received = bytearray()
    with _UnsizedServer(tmp_path / "unsized") as server:
        server.write("pkg.conda", data)
        client = UpstreamClient(waiting=True)
        download = storage.StreamedDownload(client, f"{server.url}/pkg.conda")
        try:
            with pytest.raises(storage.IntegrityError, match="more than"):
                for chunk in download:
                    received += chunk
        finally:
            download.close()
            client.close()
    assert len(received) <= 2 * MIB and bytes(received) == data[: len(received)]
    assert download.result is None and not _threads_alive("psm-receiver")

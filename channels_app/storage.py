"""Content-addressed files over Django's storage API.

A file is stored once under `blobs/<sha256>`, whichever channels list it. Bytes are hashed while
they are written to a temporary file, checked against what upstream promised, and only then moved
into place, so a half-written or unverified file is never published.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import requests
import urllib3.exceptions
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage

from psm.http import (
    CHUNK_SIZE,
    UpstreamClient,
    UpstreamError,
    open_stream,
    status_error,
    upstream_error,
)
from psm.own_connection import meanwhile

from .models import Artifact


class IntegrityError(Exception):
    """The bytes do not match the expected checksum or size; `check` says which."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


def blob_path(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobWriter:
    """A file being written into storage: hashed as it is written, published only by `commit`.

    Use as a context manager; leaving it without `commit` (or with an exception) discards the
    bytes. Touches no database, so download threads can use it.
    """

    def __init__(
        self, *, max_bytes: int | None = None, with_md5: bool = False, path: str | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        # md5 only when it is all upstream gives: it costs a second pass's worth of CPU.
        self._sha256, self._md5 = hashlib.sha256(), hashlib.md5() if with_md5 else None
        if path is None:
            self._tmp = tempfile.NamedTemporaryFile(dir=_tmp_dir(), delete=False)
        else:
            # A known place other requests can read while it grows (see passive.py's follower).
            # A fresh file (new inode): a reader of an older, abandoned one never sees ours.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._tmp = open(path, "xb")  # noqa: SIM115 - closed by commit/discard

    def write(self, chunk: bytes) -> int:
        self.count(len(chunk))
        return self.absorb(chunk)

    def count(self, length: int) -> None:
        """Add `length` bytes to the size, refusing more than `max_bytes` (`write`'s check, for
        a caller that hands the bytes to `absorb` elsewhere)."""
        self.size += length
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise IntegrityError("size", f"more than the expected {self.max_bytes} bytes")

    def absorb(self, chunk: bytes) -> int:
        """Hash and write bytes already `count`ed."""
        self._sha256.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        return self._tmp.write(chunk)

    def commit(
        self, *, sha256: str | None = None, md5: str | None = None, size: int | None = None
    ) -> tuple[str, int]:
        """Check the bytes against what was promised, move them into place; return (sha256, size)."""
        self._tmp.close()
        digest = self._sha256.hexdigest()
        if size is not None and self.size != size:
            raise IntegrityError("size", f"size {self.size} does not match the expected {size}")
        if sha256 and digest != sha256.lower():
            raise IntegrityError("sha256", f"sha256 {digest} does not match the expected {sha256}")
        if md5 and self._md5 is not None and self._md5.hexdigest() != md5.lower():
            raise IntegrityError(
                "md5", f"md5 {self._md5.hexdigest()} does not match the expected {md5}"
            )
        path = blob_path(digest)
        if not default_storage.exists(path):
            with open(self._tmp.name, "rb") as source:
                default_storage.save(path, _VerifiedFile(source))
        self.discard()
        return digest, self.size

    def discard(self) -> None:
        self._tmp.close()
        if os.path.exists(self._tmp.name):  # local storage may have moved it into place
            os.unlink(self._tmp.name)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()


class BufferedBlobWriter:
    """A `BlobWriter` for files that are mostly small (index pages): held in memory up to
    `SMALL_BLOB` bytes and stored in one step by `put_bytes`; a larger one goes on to a
    `BlobWriter` as soon as it outgrows that. Context manager, like `BlobWriter`."""

    def __init__(self) -> None:
        self.size = 0
        self._held: list[bytes] = []
        self._writer: BlobWriter | None = None

    def write(self, chunk: bytes) -> int:
        if self._writer is None and self.size + len(chunk) > SMALL_BLOB:
            self._writer = BlobWriter()
            for held in self._held:
                self._writer.write(held)
            self._held = []
        self.size += len(chunk)
        if self._writer is not None:
            return self._writer.write(chunk)
        self._held.append(bytes(chunk))
        return len(chunk)

    def commit(self) -> tuple[str, int]:
        """Store the bytes; return (sha256, size)."""
        if self._writer is not None:
            return self._writer.commit()
        return put_bytes(b"".join(self._held))

    def held(self) -> bytes | None:
        """The bytes written, if small enough to be held in memory (then the caller stores
        them, e.g. by `put_bytes`, and this writer stores nothing); else None."""
        return None if self._writer is not None else b"".join(self._held)

    def __enter__(self) -> BufferedBlobWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._writer is not None:
            self._writer.discard()
        self._held = []


#: Files up to this size are written in one step (`put_bytes`), from memory.
SMALL_BLOB = 1024 * 1024


def put_bytes(data: bytes) -> tuple[str, int]:
    """Store `data` (held in memory) as a blob unless stored already; return (sha256, size).

    The cheap way for the hundreds of thousands of pages of a PyPI-sized publish: hashed in
    one call; on local storage written to a temporary file in the same file system and
    renamed into place (readers never see a partial file), without Django's per-file name
    checks (a blob's name is its content, so replacing one with itself is harmless).
    """
    return put_many([data])[0]


def put_many(items: Iterable[bytes]) -> list[tuple[str, int]]:
    """`put_bytes` of several files (the folders looked up once for all of them)."""
    root = _local_root()
    if root is None:
        return [_put_through_django(data) for data in items]
    folder = _tmp_dir() or tempfile.gettempdir()
    mode = default_storage.file_permissions_mode or _FILE_MODE
    return [_put_local(data, root, folder, mode) for data in items]


def _put_through_django(data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = blob_path(digest)
    if not default_storage.exists(path):
        default_storage.save(path, ContentFile(data))
    return digest, len(data)


def _put_local(data: bytes, root: str, folder: str, mode: int) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    target = os.path.join(root, blob_path(digest))
    if os.path.exists(target):
        return digest, len(data)
    # Named after this process and thread: no other live writer uses the name.
    temporary = f"{folder}/put-{os.getpid()}-{threading.get_ident()}-{next(_PUT_NUMBERS)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(fd, mode)
        try:
            os.replace(temporary, target)
        except FileNotFoundError:  # the blob's folder is new
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return digest, len(data)


_PUT_NUMBERS = itertools.count()
#: Mode of a file written by `put_bytes` when the storage sets none (as Django's default).
_FILE_MODE = 0o644


def _local_root() -> str | None:
    """The root folder of local storage that `put_bytes` may write into directly; None for
    other storages (and local ones with folder permissions to apply: Django does it)."""
    storage = default_storage
    if isinstance(storage, FileSystemStorage) and storage.directory_permissions_mode is None:
        return storage.location
    return None


def store(
    chunks: Iterable[bytes],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    max_bytes: int | None = None,
) -> Artifact:
    """Write the chunks to storage if they match the expected digests; return their Artifact."""
    limit = max_bytes if max_bytes is not None else size
    with BlobWriter(max_bytes=limit, with_md5=bool(md5)) as writer:
        for chunk in chunks:
            writer.write(chunk)
        digest, total = writer.commit(sha256=sha256, md5=md5, size=size)
    return artifact_for(digest, total)


def artifact_for(sha256: str, size: int) -> Artifact:
    """The Artifact row of a committed blob."""
    artifact, _ = Artifact.objects.get_or_create(sha256=sha256, defaults={"size": size})
    return artifact


def artifacts_for(sizes: dict[str, int]) -> dict[str, Artifact]:
    """The Artifact rows of many committed blobs (sha256 -> size), created in bulk."""
    digests = sorted(sizes)
    found: dict[str, Artifact] = {}
    for start in range(0, len(digests), 5000):
        chunk = digests[start : start + 5000]
        Artifact.objects.bulk_create(
            [Artifact(sha256=digest, size=sizes[digest]) for digest in chunk],
            ignore_conflicts=True,
        )
        found.update((a.sha256, a) for a in Artifact.objects.filter(sha256__in=chunk))
    return found


def open_artifact(artifact: Artifact) -> BinaryIO:
    """Open a stored file for reading."""
    return default_storage.open(artifact.storage_path, "rb")


def damage(artifact: Artifact, sha256: str, size: int) -> str | None:
    """What is wrong with the stored bytes of `artifact`, which hash to `sha256` and number
    `size`; None if they are its bytes."""
    if size != artifact.size:
        return f"{size} bytes stored, {artifact.size} expected"
    if sha256 != artifact.sha256:
        return f"its bytes hash to sha256 {sha256}, not {artifact.sha256}"
    return None


class DamagedFile(IntegrityError):
    """A stored file whose bytes are not its artifact's, found while reading it to build
    another file from it."""

    def __init__(self, artifact: Artifact, problem: str) -> None:
        super().__init__("sha256", problem)
        self.artifact, self.problem = artifact, problem


def checked_chunks(artifact: Artifact, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """A stored file's bytes in chunks, hashed as they are read; DamagedFile after the last if
    they are not its artifact's (its digest and size)."""
    digest, size = hashlib.sha256(), 0
    with open_artifact(artifact) as stored:
        while chunk := stored.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
    problem = damage(artifact, digest.hexdigest(), size)
    if problem:
        raise DamagedFile(artifact, problem)


def read_verified(artifact: Artifact) -> bytes:
    """A stored file's bytes, checked against its digest and size: for building another stored
    file from them (a rewrite, a copy), whose own digest would vouch for damage that no
    verification has found yet. Raises DamagedFile."""
    return b"".join(checked_chunks(artifact))


def damage_later(artifact: Artifact, data) -> Callable[[], str | None]:
    """`damage` of the artifact's bytes at hand (read, or mapped: `data`), hashed meanwhile in
    a thread of its own (hashlib leaves the interpreter free); the callable returned waits
    for it. `data` must stay open until then."""
    return meanwhile(
        lambda: damage(artifact, hashlib.sha256(data).hexdigest(), len(data)), "psm-verify"
    )


def delete_blob(sha256: str) -> None:
    default_storage.delete(blob_path(sha256))


class _VerifiedFile(File):
    """A finished temporary file; local storage renames it into place (atomic) instead of
    copying, so readers never see a partial file."""

    def temporary_file_path(self) -> str:
        return self.file.name


def remove_stale_files(folder: str | None, older_than: float, pattern: str = "*") -> int:
    """Delete the files in `folder` matching `pattern` not written for `older_than` seconds:
    what a killed download left behind (a live one writes every few seconds); return how many."""
    if not folder or not os.path.isdir(folder):
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for path in glob.glob(os.path.join(folder, pattern)):
        with contextlib.suppress(OSError):  # gone meanwhile, or not a file
            if os.path.isfile(path) and os.path.getmtime(path) < cutoff:
                os.unlink(path)
                removed += 1
    return removed


def locks_dir() -> str:
    """This host's folder of file locks and of passive files being fetched (web workers
    share the data dir)."""
    folder = os.path.join(settings.DATA_DIR, "locks")
    os.makedirs(folder, exist_ok=True)
    return folder


def tmp_dir() -> str | None:
    """Where downloads are written before they are verified and moved into place."""
    return _tmp_dir()


def _tmp_dir() -> str | None:
    # Same file system as local storage, so the final move is cheap; None = system temp dir.
    location = getattr(default_storage, "location", None)
    if location:
        path = os.path.join(location, "tmp")
        os.makedirs(path, exist_ok=True)
        return path
    return None


def download(
    client: UpstreamClient,
    url: str,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    stop: threading.Event | None = None,
    every_digest: bool = False,
    on_bytes: Callable[[int], object] | None = None,
) -> tuple[str, int]:
    """Fetch a package file into storage, verified; return (sha256, size). No database access.

    md5 is checked when it is the only digest, or with `every_digest`. Transient failures
    (connection refused or cut, 5xx) are retried; a checksum mismatch or a 404 is not. Raises
    UpstreamError, IntegrityError, or Stopped when `stop` is set. `on_bytes(n)` is told of
    every chunk as it arrives (a run's heartbeat follows the bytes, not only whole files).
    """
    attempts = settings.PSM_HTTP_RETRIES + 1
    md5 = _md5_to_check(sha256, md5, every_digest)
    for attempt in range(attempts):
        try:
            with BlobWriter(max_bytes=_limit(size), with_md5=bool(md5)) as writer:
                with _open_file(client, url) as response:
                    for chunk in _chunks(response, url):
                        if stop is not None and stop.is_set():
                            raise Stopped
                        writer.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                return writer.commit(sha256=sha256, md5=md5, size=size)
        except UpstreamError as exc:
            retried = exc.transient and not (exc.timed_out and client.waiting)
            if not retried or attempt + 1 == attempts:
                raise
            time.sleep(min(0.5 * 2**attempt, 10))
    raise AssertionError("unreachable")


@contextmanager
def _open_file(client: UpstreamClient, url: str) -> Iterator[requests.Response]:
    """The upstream response of a package file; anything but a 200 is an UpstreamError."""
    with open_stream(client.session, url) as response:
        if response.status_code != 200:
            raise status_error(url, response.status_code)
        yield response


def _chunks(response: requests.Response, url: str) -> Iterator[bytes]:
    """The body as it arrives; a connection lost midway is a transient UpstreamError."""
    try:
        yield from response.iter_content(CHUNK_SIZE)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise upstream_error(url, exc, target=response.url, interrupted=True) from exc


def _md5_to_check(sha256: str | None, md5: str | None, every_digest: bool) -> str | None:
    """md5 only when it is the only digest (or `every_digest`): sha256 suffices, and md5
    would cost a second hash's CPU."""
    return None if sha256 and not every_digest else md5


class _Storer:
    """Hashes and writes a BlobWriter's chunks in a thread of its own, so a client waiting on
    the bytes waits on neither the disk nor the hash (hashlib and file writes release the GIL:
    on another core they overlap the network). At most `depth` chunks wait (bounded memory;
    a slower disk slows the client down rather than filling the memory). `finish` returns once
    every chunk is absorbed and raises what absorbing failed with; `stop` abandons the rest."""

    def __init__(self, writer: BlobWriter, depth: int = 16) -> None:
        self.writer = writer
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="psm-storer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.error is None and not self._stopped:
                try:
                    self.writer.absorb(chunk)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self.error = exc

    def put(self, chunk: bytes) -> None:
        """Queue a chunk the writer has `count`ed; raises a failure of an earlier one."""
        if self.error is not None:
            raise self.error
        self._queue.put(chunk)

    def finish(self) -> None:
        self._end()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stopped = True  # the thread skips what is still queued
        self._end()

    def _end(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class StreamedDownload:
    """A package file handed on to a client while it is stored (a passive mirror's first request).

    Opening it opens the upstream response, so a refusal (404, 5xx, no connection) is raised
    before anything is sent. Iterating yields the bytes as they arrive, hashing and storing
    them, but holds back the last chunk until the whole file is verified and committed: a file
    that does not match its index entry raises IntegrityError and never reaches the client
    complete. `result` is then (sha256, size). No database access; `close` releases everything.
    `partial`: write the bytes to this path while they arrive, so others can follow them.
    """

    def __init__(
        self,
        client: UpstreamClient,
        url: str,
        *,
        sha256: str | None = None,
        md5: str | None = None,
        size: int | None = None,
        every_digest: bool = False,
        partial: str | None = None,
    ) -> None:
        self.url = url
        self.expected = {
            "sha256": sha256,
            "md5": _md5_to_check(sha256, md5, every_digest),
            "size": size,
        }
        self.result: tuple[str, int] | None = None
        self._stream = _open_file(client, url)
        self.response = self._stream.__enter__()  # raises before anything is held open
        length = self.response.headers.get("Content-Length", "")
        announced = int(length) if length.isdigit() else None
        if size is not None and announced is not None and announced != size:
            self.close()
            raise IntegrityError("size", f"upstream announces {announced} bytes, not {size}")
        if announced is not None and announced > _limit(size):
            self.close()
            raise IntegrityError(
                "size", f"upstream announces {announced} bytes, more than PSM_MAX_FILE_BYTES"
            )
        self._writer = BlobWriter(
            max_bytes=_limit(size), with_md5=bool(self.expected["md5"]), path=partial
        )
        self._storer: _Storer | None = None
        self.length = size if size is not None else announced

    def __iter__(self) -> Iterator[bytes]:
        # A receiving thread reads the upstream ahead of the client, counts each chunk (too
        # many bytes: refused before any goes out) and hands it to the storer, which hashes
        # and writes it; this thread only passes the chunks on. So receiving, sending and
        # hashing overlap (each releases the GIL) instead of taking turns. The last chunk
        # waits for the storer and the verdict. With the length known, the last chunk is the
        # one that reaches it; else each chunk is held until the next one arrives.
        self._storer = _Storer(self._writer)
        self._receiver = _Receiver(_chunks(self.response, self.url), self._accept)
        held, received = b"", 0
        for chunk in self._receiver:
            received += len(chunk)
            if held:
                yield held
                held = b""
            if self.length is None or received >= self.length:
                held = chunk
            else:
                yield chunk
        self._storer.finish()
        self.result = self._writer.commit(**self.expected)
        if held:
            yield held

    def _accept(self, chunk: bytes) -> None:
        """The receiving thread's step for each chunk, before the client may have it."""
        self._writer.count(len(chunk))
        self._storer.put(chunk)

    def close(self) -> None:
        if getattr(self, "_receiver", None) is not None:
            self._receiver.stop(self.response)  # before the storer it feeds
        if getattr(self, "_storer", None) is not None:
            self._storer.stop()  # before the writer's file is closed under it
        if hasattr(self, "_writer"):
            self._writer.discard()
        self._stream.__exit__(None, None, None)


class _Receiver:
    """Reads `chunks` in a thread of its own, at most `depth` chunks ahead of the iterating
    thread (bounded memory: a slow client slows the download down), calling `accept` on
    each first. Iterating yields them in order, then raises what reading or `accept` failed
    with. `stop` abandons the rest and returns once the thread has ended."""

    _END = object()

    def __init__(
        self, chunks: Iterator[bytes], accept: Callable[[bytes], None], depth: int = 8
    ) -> None:
        self._chunks, self._accept = chunks, accept
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="psm-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                self._accept(chunk)
                if not self._offer(chunk):
                    return
            self._offer(self._END)
        except BaseException as exc:  # noqa: BLE001 - raised in the iterating thread
            self._offer(_Failure(exc))

    def _offer(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def stop(self, response: requests.Response) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            # Waiting on upstream (a stalled one): shutting the socket down wakes it up.
            connection = getattr(response.raw, "_connection", None)
            sock = getattr(connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()


class _Failure:
    """What the receiving thread failed with, handed to the iterating thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _limit(size: int | None) -> int:
    """The most bytes a download may bring: the size the index gives, else the global cap."""
    return size if size is not None else settings.PSM_MAX_FILE_BYTES


class Stopped(Exception):
    """A download was abandoned because its run is stopping."""

"""A passive mirror's package files, fetched from upstream on their first request.

The file is passed on to that client as it arrives while being verified and stored (the last
chunk only once it is verified), with one upstream download however many clients ask at once:
the others follow the file on disk as it grows (`_follow`). The first chunk is read before the
response is committed, so a fetch that fails before it answers 502 (504: upstream timed out)
with the reason; later, the body is cut short. A failed fetch is noted on the package
(`record_fetch_failure`). Without streaming (a Range request, or waiting on another request's
download), `fetch_on_demand` stores the file first. A file upstream serves beside a package
(`fetch_sidecar`) is stored before it is served.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from django.conf import settings
from django.db import connection
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import quote_etag

from psm.http import CHUNK_SIZE, UpstreamError, shared_client
from psm.redaction import scrub

from . import lookup, storage
from .formats import RepositoryFormat, content_type
from .http_files import IMMUTABLE
from .models import Artifact, Package

logger = logging.getLogger(__name__)


def fetch_on_demand(package: Package, *, every_digest: bool = False) -> None:
    """Store a passive package's file from upstream (verified); one download per file. A
    failure is noted on the package (`record_fetch_failure`) and raised."""
    with file_lock(f"package-{package.pk}"):
        package.refresh_from_db(fields=["artifact"])
        if package.artifact_id is not None:
            return  # another request fetched it while we waited
        stored = Artifact.objects.filter(sha256=package.sha256).first() if package.sha256 else None
        if stored is None:
            try:
                sha256, size = storage.download(
                    shared_client(),
                    package.upstream_url,
                    sha256=package.sha256 or None,
                    md5=package.md5 or None,
                    size=package.size,
                    every_digest=every_digest,
                )
            except FETCH_ERRORS as exc:
                record_fetch_failure(package, fetch_failure_reason(package, exc))
                raise
            stored = storage.artifact_for(sha256, size)
        _record_fetched(package, stored)


def fetch_sidecar(url: str, sha256: str) -> Artifact:
    """Store a file upstream serves beside a package (PEP 658 metadata) from `url`, verified
    against `sha256` from the package's record; one download per file."""
    with file_lock(f"sidecar-{sha256}"):
        artifact = Artifact.objects.filter(sha256=sha256).first()
        if artifact is None:
            digest, size = storage.download(shared_client(), url, sha256=sha256)
            artifact = storage.artifact_for(digest, size)
        return artifact


# What fetching a package file from upstream may fail with (a client going away is not one).
FETCH_ERRORS = (UpstreamError, storage.IntegrityError)


def fetch_failure_reason(package: Package, exc: Exception) -> str:
    """Why fetching the package's file failed, in words, its source's secrets hidden."""
    if isinstance(exc, storage.IntegrityError):
        reason = f"upstream sent a file that does not match its index entry: {exc}"
    else:
        reason = str(exc)
    return scrub(reason, package.upstream_url)


def record_fetch_failure(package: Package, reason: str) -> None:
    """Note on the package why (and when) its file could not be fetched, for the mirror's
    details; a later successful fetch clears it (`_record_fetched`). A stored file is never
    marked failed (another request may have stored it meanwhile)."""
    reason = scrub(reason, package.upstream_url)[: Package._meta.get_field("error").max_length]
    logger.warning("passive fetch of %s failed: %s", package, reason)
    Package.objects.filter(pk=package.pk, artifact__isnull=True).update(
        error=reason, updated_at=timezone.now()
    )


def _record_fetched(package: Package, artifact: Artifact) -> None:
    """The package's file is stored: link it, and clear a failure noted earlier."""
    Package.objects.filter(pk=package.pk).update(
        artifact=artifact, error="", updated_at=timezone.now()
    )
    package.artifact = artifact


class FileLock:
    """An exclusive lock across the processes of this host (web workers share a data dir)."""

    def __init__(self, name: str) -> None:
        self.path = _lock_path(f"{name}.lock")
        self.handle = None

    def is_held(self) -> bool:
        """Whether someone (another request, another worker) holds the lock right now."""
        if not self.acquire(blocking=False):
            return True
        self.release()
        return False

    def acquire(self, *, blocking: bool = True) -> bool:
        handle = open(self.path, "a+b")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


@contextmanager
def file_lock(name: str) -> Iterator[None]:
    lock = FileLock(name)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def stream_on_demand(
    package: Package, fmt: RepositoryFormat, filename: str
) -> StreamingHttpResponse | None:
    """A passive package's first request: pass the upstream bytes on while storing them, so a
    client never waits out a big download in silence (pip gives up after 15 s). None when
    the file is stored already, or another request is fetching it and none of it is on disk yet
    (wait for it); while its bytes are arriving, follow them (`_follow`). Raises what fetching
    fails with before the first chunk is ready (then nothing was sent: the view answers 502)."""
    lock = FileLock(f"package-{package.pk}")
    if not lock.acquire(blocking=False):
        return _follow(package, filename)
    try:
        if lookup.is_stored(package):
            lock.release()
            return None
        streamed = _StreamedBody(package, fmt, lock)
        body = _Primed(streamed)
    except BaseException:
        lock.release()  # a no-op if the body released it already
        raise
    return _streamed_response(body, package, filename, streamed.download.length)


def _streamed_response(body, package: Package, filename: str, length: int | None):
    """The response of a package file sent while it arrives (first request or follower)."""
    response = StreamingHttpResponse(body, content_type=content_type(filename))
    if length is not None:
        response["Content-Length"] = str(length)
    if package.sha256:
        response["ETag"] = quote_etag(package.sha256)
    response["Cache-Control"] = IMMUTABLE
    return response


class _Primed:
    """A streamed body whose first chunk is read in the view, before the response's status
    and headers are committed: a failure up to there (upstream refusing, a cut, a file of one
    chunk that does not verify) still becomes a 502 with its reason, not the WSGI server's
    bare 500. After it, all a client can be told is a body cut short (it retries). Closing
    closes the body, whether it was sent, failed or was abandoned."""

    def __init__(self, body) -> None:
        self.body, self.chunks = body, iter(body)
        try:
            self.first: bytes | None = next(self.chunks, None)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        first, self.first = self.first, None
        if first is not None:
            yield first
        yield from self.chunks

    def close(self) -> None:
        try:
            self.chunks.close()
        finally:
            self.body.close()


class _StreamedBody:
    """The body of a streamed first request: opens the upstream file, stores it once it is
    verified (before its last chunk goes out), notes a failure on the package, and frees the
    upstream connection and the lock when closed."""

    def __init__(self, package: Package, fmt: RepositoryFormat, lock: FileLock) -> None:
        self.package, self.fmt, self.lock = package, fmt, lock
        self.client = shared_client()  # its connections outlive this request
        self.download: storage.StreamedDownload | None = None
        self.recorded = False

    def __iter__(self) -> Iterator[bytes]:
        package = self.package
        try:
            self.download = storage.StreamedDownload(
                self.client,
                package.upstream_url,
                sha256=package.sha256 or None,
                md5=package.md5 or None,
                size=package.size,
                every_digest=self.fmt.capabilities.checks_every_digest,
                partial=partial_path(package),
            )
            for chunk in self.download:
                if self.download.result is not None:  # verified and stored: record it first
                    self._record()
                yield chunk
            self._record()  # an empty file yields nothing
        except FETCH_ERRORS as exc:
            # A client going away closes this generator (GeneratorExit): not a failure.
            record_fetch_failure(package, fetch_failure_reason(package, exc))
            raise

    def _record(self) -> None:
        if self.recorded:
            return
        # The client's last chunk waits on this: on PostgreSQL one statement (one round trip)
        # whose commit does not wait for the disk (a record lost in a crash only means the
        # next request fetches the file again), which under write load is most of the wait.
        sha256, size = self.download.result
        if connection.vendor == "postgresql":
            now = timezone.now()
            lookup.fetch_prepared(
                _record_statement(), [sha256, size, now, now, sha256, now, self.package.pk]
            )
        else:
            _record_fetched(self.package, storage.artifact_for(sha256, size))
        self.recorded = True

    def close(self) -> None:
        try:
            if self.download is not None:
                self.download.close()
        finally:
            self.lock.release()


@cache
def _record_statement() -> str:
    """A stored file's artifact row (unless there is one) and the package's link to it, in a
    transaction whose commit does not wait for the disk (`synchronous_commit`, set for this
    transaction only: it is read when the statement commits)."""
    artifact, package = Artifact._meta.db_table, Package._meta.db_table
    return (
        f"WITH new AS (INSERT INTO {artifact} (sha256, size, created_at, verified_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING RETURNING id) "
        f"UPDATE {package} SET artifact_id = COALESCE((SELECT id FROM new), "
        f"(SELECT id FROM {artifact} WHERE sha256 = %s)), error = '', updated_at = %s "
        "WHERE id = %s AND set_config('synchronous_commit', 'off', true) IS NOT NULL "
        "RETURNING id"
    )


FOLLOW_POLL = 0.1  # seconds between looks at a growing file: prompt, and no busy loop


def partial_path(package: Package) -> str:
    """Where the first request writes a passive file while it arrives: next to its lock, so only
    this host's requests (which share that lock) read it."""
    return _lock_path(f"package-{package.pk}.part")


def _lock_path(name: str) -> str:
    """A file in this host's lock folder (web workers share the data dir)."""
    return os.path.join(storage.locks_dir(), name)


def _follow(package: Package, filename: str) -> StreamingHttpResponse | None:
    """A request for a file another request is fetching: send what is on disk and follow the
    file as it grows, so a second client is not left in silence either. None when no bytes
    appear before that download ends (then wait for it and serve from storage)."""
    lock, path = FileLock(f"package-{package.pk}"), partial_path(package)
    deadline = time.monotonic() + settings.PSM_HTTP_TIMEOUT
    while True:
        try:
            partial = open(path, "rb")  # noqa: SIM115 - closed by _FollowedBody.close
            break
        except FileNotFoundError:
            if not lock.is_held() or time.monotonic() > deadline:
                return None
            time.sleep(FOLLOW_POLL)
    body = _Primed(_FollowedBody(package, partial, lock))
    return _streamed_response(body, package, filename, package.size)


class _FollowedBody:
    """The body of a request following another's download, with the first request's guarantee:
    the last chunk is sent only once the file is recorded (verified) and what this request
    read hashes to the recorded artifact. If the download is abandoned or fails (the lock is
    freed with no artifact), or no byte arrives for PSM_HTTP_TIMEOUT, the response is cut
    short: the client retries, and its retry fetches the file anew. (Taking the download over
    would need a Range request upstream; a cut is simpler and rare.)"""

    def __init__(self, package: Package, partial, lock: FileLock) -> None:
        self.package, self.partial, self.lock = package, partial, lock
        self.started = timezone.now()

    def __iter__(self) -> Iterator[bytes]:
        digest, size, held = hashlib.sha256(), 0, b""
        artifact: tuple[str, int] | None = None
        idle_since = time.monotonic()
        while True:
            chunk = self.partial.read(CHUNK_SIZE)
            if chunk:
                digest.update(chunk)
                size += len(chunk)
                if held:
                    yield held
                held, idle_since = chunk, time.monotonic()
                continue
            if artifact is not None:
                break  # recorded, and read to its end since
            # Nothing new: the database says when the file is complete (only look once all
            # bytes are in when the size is known); the lock, when its download has ended.
            if self.package.size is None or size >= self.package.size:
                artifact = self._recorded()
                if artifact is not None:
                    continue  # read what was written before it was recorded
            if not self.lock.is_held():
                artifact = self._recorded()
                if artifact is not None:
                    continue
                failed = self._failure()
                self._cut(
                    f"the download it followed failed: {failed}"
                    if failed
                    else "the download it followed was abandoned"
                )
            if time.monotonic() - idle_since > settings.PSM_HTTP_TIMEOUT:
                self._cut(f"no byte arrived for {settings.PSM_HTTP_TIMEOUT} s")
            time.sleep(FOLLOW_POLL)
        if (digest.hexdigest(), size) != artifact:
            self._cut("what it read is not the stored file")
        if held:
            yield held

    def _recorded(self) -> tuple[str, int] | None:
        """(sha256, size) of the package's artifact once the first request has recorded it."""
        row = (
            Package.objects.filter(pk=self.package.pk, artifact__isnull=False)
            .values_list("artifact__sha256", "artifact__size")
            .first()
        )
        return tuple(row) if row else None

    def _failure(self) -> str:
        """Why the download this request followed failed, if it noted a reason."""
        row = Package.objects.filter(
            pk=self.package.pk, artifact__isnull=True, updated_at__gte=self.started
        ).values_list("error", flat=True)
        return row.first() or ""

    def _cut(self, reason: str) -> None:
        logger.warning("passive fetch of %s, followed, cut short: %s", self.package, reason)
        raise UpstreamError(self.package.upstream_url, f"cut short: {reason}")

    def close(self) -> None:
        self.partial.close()

"""Serve channels to package clients under `/api/repo/<channel>[/<subchannel>]/<path>`.

Index files are the published ones (rendered once at publish, never per request). Package files
come from storage; a passive mirror's file is fetched from upstream on its first request, passed
on to that client as it arrives while being verified and stored (the last chunk only once it is
verified), with one upstream download however many clients ask at once: the others follow the
file on disk as it grows (`_follow`). The first chunk is read before the response is committed,
so a fetch that fails before it answers 502 (504: upstream timed out) with the reason; later,
the body is cut short. A failed fetch is noted on the package (`record_fetch_failure`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from django.conf import settings
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotFound,
    HttpResponsePermanentRedirect,
    StreamingHttpResponse,
)
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import quote_etag
from django.views.decorators.http import require_safe

from psm.http import CHUNK_SIZE, UpstreamClient, UpstreamError
from psm.redaction import scrub

from . import access, storage
from .formats import content_type, get_format
from .http_files import file_response
from .models import Artifact, Channel, Package, PublishedFile
from .publishing import channel_publish

logger = logging.getLogger(__name__)
IMMUTABLE = "public, max-age=31536000, immutable"


@require_safe
def repo_file(request: HttpRequest, path: str, token: str | None = None) -> HttpResponseBase:
    """Any file of a channel: a published index file or a package file.

    `token`: from the `/api/repo/t/<token>/…` form of the URL. Who may read is decided by
    `access` before anything else (passive fetches included).
    """
    requester = access.repo_requester(request, token)
    if isinstance(requester, HttpResponse):
        return requester
    try:
        channel, inner = _resolve(path)
        access.check_read(channel, requester)
        response = _channel_file(request, channel, inner, token)
    except Http404 as exc:
        # Every 404 varies by cookie, as a restricted channel's does (its check reads the
        # session): a missing channel and a hidden one answer alike, headers included.
        response = HttpResponseNotFound(f"{exc}\n", content_type="text/plain")
        patch_vary_headers(response, ("Cookie",))
        return response
    if channel.visibility != Channel.Visibility.PUBLIC and response.has_header("Cache-Control"):
        # Never let a shared cache hand a restricted channel's files to someone else.
        response["Cache-Control"] = response["Cache-Control"].replace("public", "private")
    return response


def _channel_file(
    request: HttpRequest, channel: Channel, inner: str, token: str | None
) -> HttpResponseBase:
    fmt = get_format(channel.kind)
    negotiated = fmt.index_request(inner, request.headers.get("Accept"))
    if negotiated is not None:
        if negotiated.redirect:
            base = f"/api/repo/t/{token}" if token else "/api/repo"
            return HttpResponsePermanentRedirect(f"{base}/{channel.path}/{negotiated.redirect}")
        if not negotiated.path:
            offered = ", ".join(negotiated.content_types)
            return HttpResponse(
                f"None of the accepted content types is available; offered: {offered}\n",
                status=406,
                content_type="text/plain",
            )
        inner = negotiated.path
    published = (
        PublishedFile.objects.filter(channel=channel, path=inner).select_related("artifact").first()
    )
    if published is None and channel.published_at is None and not channel.frozen:
        # A channel nothing was mirrored into yet still answers with (empty) index files.
        channel_publish(channel=channel)
        published = (
            PublishedFile.objects.filter(channel=channel, path=inner)
            .select_related("artifact")
            .first()
        )
    if published is not None:
        artifact = published.artifact
        response = file_response(
            request,
            lambda: storage.open_artifact(artifact),
            size=artifact.size,
            etag=artifact.sha256,
            content_type=published.content_type,
            last_modified=published.published_at,
            cache_control=f"public, max-age={settings.PSM_INDEX_MAX_AGE}",
        )
        if negotiated is not None:
            response["Vary"] = "Accept"
        return response
    return _package_file(request, channel, inner)


def _resolve(path: str) -> tuple[Channel, str]:
    """(channel, path inside it); a subchannel wins over a same-named folder of its parent."""
    parts = path.split("/")
    if len(parts) >= 3:
        sub = Channel.objects.filter(
            parent__parent__isnull=True, parent__name=parts[0], name=parts[1]
        ).first()
        if sub is not None:
            return sub, "/".join(parts[2:])
    channel = Channel.objects.filter(parent__isnull=True, name=parts[0]).first()
    if channel is None or len(parts) < 2:
        raise Http404("No such channel.")
    return channel, "/".join(parts[1:])


def _package_file(request: HttpRequest, channel: Channel, inner: str) -> HttpResponseBase:
    fmt = get_format(channel.kind)
    located = fmt.locate(inner)
    if located is None:
        sidecar = fmt.locate_sidecar(inner)
        if sidecar is not None:
            return _sidecar_file(request, channel, fmt, *sidecar)
        raise Http404("No such file.")
    unit, filename = located
    package = (
        Package.objects.filter(channel=channel, subdir=unit, filename=filename)
        .select_related("artifact")
        .first()
    )
    if package is None or not package.is_servable:
        raise Http404("No such file in this channel.")
    if package.artifact is None:
        if request.method == "HEAD":
            # Promise nothing we have not verified; clients only HEAD index files.
            response = HttpResponse(status=200, content_type=_content_type(filename))
            if package.size is not None:
                response["Content-Length"] = str(package.size)
            return response
        try:
            if "Range" not in request.headers:
                streamed = _stream_on_demand(package, fmt, filename)
                if streamed is not None:
                    return streamed
            fetch_on_demand(package, every_digest=fmt.capabilities.checks_every_digest)
        except FETCH_ERRORS as exc:
            return _fetch_failure(package, exc)
    artifact = package.artifact
    return file_response(
        request,
        lambda: storage.open_artifact(artifact),
        size=artifact.size,
        etag=artifact.sha256,
        content_type=_content_type(filename),
        last_modified=package.added_at,
        cache_control=IMMUTABLE,
    )


def _sidecar_file(request, channel, fmt, unit: str, filename: str, suffix: str):
    """A file upstream serves beside a package (PEP 658 metadata): fetched once, verified
    against the digest in the package's record, then served from storage."""
    package = (
        Package.objects.filter(channel=channel, subdir=unit, filename=filename)
        .select_related("sidecar")
        .first()
    )
    if package is None or not package.is_servable:
        raise Http404("No such file in this channel.")
    if package.sidecar_id is not None:
        artifact = package.sidecar
        return file_response(
            request,
            lambda: storage.open_artifact(artifact),
            size=artifact.size,
            etag=artifact.sha256,
            content_type="application/octet-stream",
            cache_control=IMMUTABLE,
        )
    sha256 = fmt.sidecar_digest(orjson.loads(package.record or "{}"))
    if not sha256:
        raise Http404("Upstream offers no such file for this package.")
    with _file_lock(f"sidecar-{sha256}"):
        artifact = Artifact.objects.filter(sha256=sha256).first()
        if artifact is None:
            client = UpstreamClient(waiting=True)
            try:
                digest, size = storage.download(
                    client, package.upstream_url + suffix, sha256=sha256
                )
            except FETCH_ERRORS as exc:
                # Not noted on the package: its `error` is about the package file itself.
                logger.warning("fetch of the file beside %s failed: %s", package, exc)
                return _fetch_failure(package, exc)
            finally:
                client.close()
            artifact = storage.artifact_for(digest, size)
    return file_response(
        request,
        lambda: storage.open_artifact(artifact),
        size=artifact.size,
        etag=artifact.sha256,
        content_type="application/octet-stream",
        cache_control=IMMUTABLE,
    )


def fetch_on_demand(package: Package, *, every_digest: bool = False) -> None:
    """Store a passive package's file from upstream (verified); one download per file. A
    failure is noted on the package (`record_fetch_failure`) and raised."""
    with _file_lock(f"package-{package.pk}"):
        package.refresh_from_db(fields=["artifact"])
        if package.artifact_id is not None:
            return  # another request fetched it while we waited
        stored = Artifact.objects.filter(sha256=package.sha256).first() if package.sha256 else None
        if stored is None:
            client = UpstreamClient(waiting=True)
            try:
                sha256, size = storage.download(
                    client,
                    package.upstream_url,
                    sha256=package.sha256 or None,
                    md5=package.md5 or None,
                    size=package.size,
                    every_digest=every_digest,
                )
            except FETCH_ERRORS as exc:
                record_fetch_failure(package, fetch_failure_reason(package, exc))
                raise
            finally:
                client.close()
            stored = storage.artifact_for(sha256, size)
        _record_fetched(package, stored)


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


def _fetch_failure(package: Package, exc: Exception) -> HttpResponse:
    """The answer when a package file could not be fetched: 502 (504 when upstream timed out)
    with the reason."""
    reason = fetch_failure_reason(package, exc)
    timed_out = isinstance(exc, UpstreamError) and exc.timed_out
    return HttpResponse(
        f"PSM could not fetch this package from its source: {reason}\n",
        status=504 if timed_out else 502,
        content_type="text/plain",
    )


def _content_type(filename: str) -> str:
    return content_type(filename)  # one table for every file PSM serves (formats.base)


class _FileLock:
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
def _file_lock(name: str) -> Iterator[None]:
    lock = _FileLock(name)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _stream_on_demand(package: Package, fmt, filename: str) -> StreamingHttpResponse | None:
    """A passive package's first request: pass the upstream bytes on while storing them, so a
    client never waits out a big download in silence (pip gives up after 15 s). None when
    the file is stored already, or another request is fetching it and none of it is on disk yet
    (wait for it); while its bytes are arriving, follow them (`_follow`). Raises what fetching
    fails with before the first chunk is ready (then nothing was sent: the view answers 502)."""
    lock = _FileLock(f"package-{package.pk}")
    if not lock.acquire(blocking=False):
        return _follow(package, filename)
    try:
        package.refresh_from_db(fields=["artifact"])
        if package.artifact_id is not None or (
            package.sha256 and Artifact.objects.filter(sha256=package.sha256).exists()
        ):
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
    response = StreamingHttpResponse(body, content_type=_content_type(filename))
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

    def __init__(self, package: Package, fmt, lock: _FileLock) -> None:
        self.package, self.fmt, self.lock = package, fmt, lock
        self.client = UpstreamClient(waiting=True)
        self.download: storage.StreamedDownload | None = None

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
                partial=_partial_path(package),
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
        if self.package.artifact_id is None:
            _record_fetched(self.package, storage.artifact_for(*self.download.result))

    def close(self) -> None:
        try:
            if self.download is not None:
                self.download.close()
            self.client.close()
        finally:
            self.lock.release()


FOLLOW_POLL = 0.1  # seconds between looks at a growing file: prompt, and no busy loop


def _partial_path(package: Package) -> str:
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
    lock, path = _FileLock(f"package-{package.pk}"), _partial_path(package)
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

    def __init__(self, package: Package, partial, lock: _FileLock) -> None:
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

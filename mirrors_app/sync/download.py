"""Active mode: download every allowed package file not stored yet, verified, in parallel.

Threads only move bytes (upstream → verified blob); the database is touched from the run's own
thread. At most `PSM_DOWNLOAD_WORKERS` files are in flight, each streamed to disk, so memory is
bounded whatever the file sizes. A file that fails keeps its reason and stays unpublished.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import orjson
from django.conf import settings
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from channels_app import storage
from channels_app.models import Artifact, Channel, Package
from psm.http import UpstreamClient, UpstreamError, UpstreamRefused
from psm.redaction import scrub

from ..models import Mirror
from .progress import Progress, StopRequested

logger = logging.getLogger(__name__)
PAGE = 500
#: How the run's reasons count failed downloads ("download failed: HTTP 404", …).
DOWNLOAD_FAILED = "download failed"


def download_pending(mirror: Mirror, client: UpstreamClient, progress: Progress) -> None:
    """Store every pending file of this mirror; failures are recorded, not raised."""
    pending = Package.objects.filter(
        mirror=mirror,
        removed=False,
        excluded_reason="",
        on_demand=False,
        artifact__isnull=True,
    )
    _link_stored(pending, mirror)
    # One aggregate, so progress can show done / total files and bytes.
    totals = pending.aggregate(
        files=Count("pk"), bytes=Sum("size"), unsized=Count("pk", filter=Q(size__isnull=True))
    )
    progress.downloads_start(totals["files"], None if totals["unsized"] else totals["bytes"] or 0)
    stop = threading.Event()
    moved = _Arrived()
    workers = settings.PSM_DOWNLOAD_WORKERS
    in_flight: dict[Future, tuple] = {}
    last_id = 0
    every = mirror.format.capabilities.checks_every_digest
    with ThreadPoolExecutor(workers, thread_name_prefix=f"download-{mirror.pk}") as pool:
        try:
            while True:
                page = list(
                    pending.filter(pk__gt=last_id)
                    .order_by("pk")
                    .values_list(
                        "pk", "filename", "upstream_url", "sha256", "md5", "size", "record"
                    )[:PAGE]
                )
                if not page and not in_flight:
                    break
                for row in page:
                    while len(in_flight) >= 2 * workers:
                        _collect(in_flight, mirror, progress, moved)
                    pk, _, url, sha256, md5, size, record = row
                    sidecar = _sidecar(mirror, url, record)
                    future = pool.submit(
                        _fetch,
                        client,
                        url,
                        sha256 or None,
                        md5 or None,
                        size,
                        stop,
                        sidecar,
                        every,
                        moved.add,
                    )
                    in_flight[future] = row
                    last_id = pk
                if not page:
                    _collect(in_flight, mirror, progress, moved)
        except StopRequested:
            stop.set()  # abandon files in flight; what was stored is kept
            raise


class _Arrived:
    """Bytes the download threads received so far (files not finished included)."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n


def _collect(
    in_flight: dict[Future, tuple], mirror: Mirror, progress: Progress, moved: _Arrived
) -> None:
    """Record the downloads that ended; while none does, beat the run's heartbeat as long as
    bytes arrive (a run downloading one big file slowly is alive) and see a Stop. No bytes:
    no heartbeat, so a hung run is still found stale."""
    done: set = set()
    while not done:
        before = moved.total
        done, _ = wait(in_flight, timeout=progress.seconds, return_when=FIRST_COMPLETED)
        # Files that ended since the last flush are shown even while the rest take long.
        if not done and (moved.total != before or progress.unflushed):
            progress.flush()
    stored = 0
    for future in done:
        pk, filename, url, *_ = in_flight.pop(future)
        try:
            (sha256, size), sidecar = future.result()
        except storage.Stopped:
            continue
        except (UpstreamError, storage.IntegrityError) as exc:
            reason = scrub(str(exc), mirror.source_url)  # file URLs carry the source's secrets
            Package.objects.filter(pk=pk).update(error=reason[:500], updated_at=timezone.now())
            progress.fail(f"{DOWNLOAD_FAILED}: {_category(exc)}")
            logger.warning("mirror %s: %s: %s", mirror.pk, filename, reason)
            continue
        artifact = storage.artifact_for(sha256, size)
        extra = {"sidecar": storage.artifact_for(*sidecar)} if sidecar else {}
        Package.objects.filter(pk=pk).update(
            artifact=artifact, error="", updated_at=timezone.now(), **extra
        )
        progress.downloaded += 1
        progress.bytes_downloaded += size
        stored += 1
    if stored:
        Channel.objects.filter(pk=mirror.channel_id).update(
            content_version=F("content_version") + 1
        )
    progress.tick(len(done))


def _sidecar(mirror: Mirror, url: str, record: str) -> tuple[str, str] | None:
    """(url, sha256) of the file upstream serves beside this package, if any."""
    fmt = mirror.format
    suffix = fmt.capabilities.sidecar_suffix
    if not suffix or not record:
        return None
    digest = fmt.sidecar_digest(orjson.loads(record))
    return (url + suffix, digest) if digest else None


def _fetch(client, url, sha256, md5, size, stop, sidecar, every_digest=False, on_bytes=None):
    """A thread's work: the package file, then its sidecar (both verified; no database)."""
    stored = storage.download(
        client,
        url,
        sha256=sha256,
        md5=md5,
        size=size,
        stop=stop,
        every_digest=every_digest,
        on_bytes=on_bytes,
    )
    extra = None
    if sidecar:
        extra = storage.download(client, sidecar[0], sha256=sidecar[1], stop=stop)
    return stored, extra


def _link_stored(pending, mirror: Mirror) -> None:
    """Files another channel (or an earlier run) already stored need no download."""
    stored = Artifact.objects.filter(sha256=OuterRef("sha256"))
    linked = (
        pending.exclude(sha256="")
        .filter(sha256__in=Artifact.objects.values("sha256"))
        .update(artifact=Subquery(stored.values("pk")[:1]), error="", updated_at=timezone.now())
    )
    if linked:
        Channel.objects.filter(pk=mirror.channel_id).update(
            content_version=F("content_version") + 1
        )


def _category(exc: Exception) -> str:
    """A short reason to count failures by (the full one is kept on the package)."""
    if isinstance(exc, storage.IntegrityError):
        return f"{exc.check} mismatch"
    if isinstance(exc, UpstreamRefused):
        return "refused by the upstream rules"
    if isinstance(exc, UpstreamError) and exc.status:
        return f"HTTP {exc.status}"
    if isinstance(exc, UpstreamError) and exc.interrupted:
        return "connection cut"
    return "connection failed"

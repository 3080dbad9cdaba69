"""Counters of a run, written in batches, and the cooperative stop check."""

from __future__ import annotations

import time
from collections import Counter

from django.utils import timezone

from ..models import SyncRun


class StopRequested(Exception):
    """The run was asked to stop (or deleted); end it cleanly after keeping the work done."""


class RunAbandoned(StopRequested):
    """The run is no longer this worker's: failed by the stale sweep, or deleted. It stops
    like a stopped run, but publishes nothing and records nothing (its record says why)."""


class Progress:
    """Accumulate a run's counters and flush them every `every` records or `seconds`.

    Each flush is one UPDATE (counters, step, heartbeat) and one read of the run's state, so a
    user's Stop is seen within a batch.
    """

    COUNTERS = (
        "total",
        "seen",
        "filtered",
        "ingested",
        "downloaded",
        "passive",
        "failed",
        "bytes_downloaded",
        "units_total",
        "units_done",
        "files_to_download",
        "bytes_to_download",
        "downloads_started_at",
    )

    def __init__(self, run: SyncRun, *, every: int = 20_000, seconds: float = 1.0) -> None:
        self.run = run
        self.every, self.seconds = every, seconds
        self.total: int | None = None
        self.seen = self.filtered = self.ingested = 0
        self.downloaded = self.passive = self.failed = self.bytes_downloaded = 0
        self.units_total: int | None = None
        self.units_done = 0
        self.files_to_download: int | None = None
        self.bytes_to_download: int | None = None
        self.downloads_started_at = None
        self.reasons: Counter[str] = Counter()
        self.step_text = ""
        self._pending = 0
        self._flushed_at = time.monotonic()

    def step(self, text: str, *, now: bool = True) -> None:
        """Say what the run does; flushed at once, or (`now=False`, for steps taken thousands
        of times) with the next batch."""
        self.step_text = text[:200]
        if now or time.monotonic() - self._flushed_at >= self.seconds:
            self.flush()

    def downloads_start(self, files: int, size: int | None) -> None:
        """Note the files (and their bytes, if known) the download phase has to fetch."""
        self.files_to_download, self.bytes_to_download = files, size
        self.downloads_started_at = timezone.now()
        self.step("downloading package files")

    @property
    def unflushed(self) -> bool:
        """Whether work was noted since the last flush."""
        return self._pending > 0

    def exclude(self, reason: str) -> None:
        self.filtered += 1
        self.reasons[reason] += 1

    def fail(self, reason: str) -> None:
        """A file that could not be mirrored; counted by reason next to the exclusions."""
        self.failed += 1
        self.reasons[reason] += 1

    def tick(self, count: int = 1) -> None:
        """Note `count` units of work; flush (and check for Stop) when a batch is full."""
        self._pending += count
        if self._pending >= self.every or time.monotonic() - self._flushed_at >= self.seconds:
            self.flush()

    def flush(self) -> None:
        self._pending = 0
        self._flushed_at = time.monotonic()
        fields = {name: getattr(self, name) for name in self.COUNTERS}
        mine = SyncRun.objects.filter(
            pk=self.run.pk, state__in=(SyncRun.State.RUNNING, SyncRun.State.STOPPING)
        )
        updated = mine.update(
            **fields,
            filtered_reasons=dict(self.reasons),
            step=self.step_text,
            heartbeat_at=timezone.now(),
        )
        if not updated:  # failed by the stale sweep, or deleted: not ours any more
            raise RunAbandoned
        state = SyncRun.objects.filter(pk=self.run.pk).values_list("state", flat=True).first()
        if state != SyncRun.State.RUNNING:
            raise StopRequested

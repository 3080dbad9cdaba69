"""What the live progress shows of mirrors: each one's status and latest run, with the run's
counts as the details API gives them and the figures derived from them (throughput, time
left, duration), read for many mirrors in a few queries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import OuterRef, Subquery
from django.template.loader import render_to_string
from django.utils import timezone

from .api.serializers import RunProgressSerializer
from .models import Mirror, SyncRun
from .querysets import MirrorQuerySet
from .sync.download import DOWNLOAD_FAILED

TEMPLATE = "admin/mirrors_app/mirror/progress.html"
#: Mirrors one request may ask about (a list page shows at most a few hundred).
MOST_IDS = 500


def with_latest_runs(mirrors: MirrorQuerySet) -> list[Mirror]:
    """The mirrors, each with `shown_run`: its latest run (skipped ones aside), in two queries."""
    latest = (
        SyncRun.objects.filter(mirror=OuterRef("pk"))
        .exclude(state=SyncRun.State.SKIPPED)
        .order_by("-created_at", "-pk")
        .values("pk")[:1]
    )
    found = list(mirrors.with_run_warnings().annotate(latest_run_id=Subquery(latest)))
    runs = SyncRun.objects.in_bulk([m.latest_run_id for m in found if m.latest_run_id])
    for mirror in found:
        mirror.shown_run = runs.get(mirror.latest_run_id)
    return found


def figures(run: SyncRun | None, now: datetime | None = None) -> dict:
    """What the counts of `run` mean for a person watching it: the phase it is in, done and
    total of that phase, throughput and time left (active runs), duration (finished ones)."""
    if run is None:
        return {"phase": None}
    now = now or timezone.now()
    if not run.is_active:
        end = run.finished_at or now
        duration = (end - run.started_at).total_seconds() if run.started_at else None
        return {"phase": "finished", "duration_seconds": duration}
    if run.state == SyncRun.State.QUEUED:
        return {"phase": "queued"}
    if run.downloads_started_at is not None:
        elapsed = max((now - run.downloads_started_at).total_seconds(), 0.001)
        failed = _failed_downloads(run)
        files_left = max((run.files_to_download or 0) - run.downloaded - failed, 0)
        rate = run.bytes_downloaded / elapsed
        if run.bytes_to_download is not None and rate > 0:
            left = max(run.bytes_to_download - run.bytes_downloaded, 0) / rate
        elif run.downloaded:
            left = files_left / (run.downloaded / elapsed)
        else:
            left = None
        return {
            "phase": "downloading",
            "done": run.downloaded,
            "failed": failed,
            "total": run.files_to_download,
            "bytes_per_second": rate,
            "seconds_left": left if files_left else 0,
        }
    elapsed = max((now - (run.started_at or run.created_at)).total_seconds(), 0.001)
    # Records when their number is known ahead, else the index units (a conda subdir, a project).
    if run.total:
        counted, done, total = "records", run.seen, run.total
    else:
        counted, done, total = "indexes", run.units_done, run.units_total
    left = (total - done) * elapsed / done if total and done else None
    return {
        "phase": "reading",
        "counted": counted,
        "done": done,
        "total": total,
        "records_per_second": run.seen / elapsed,
        "seconds_left": max(left, 0) if left is not None else None,
    }


def _failed_downloads(run: SyncRun) -> int:
    """Files of the download phase that failed (the run's other failures are unread indexes)."""
    reasons = run.filtered_reasons or {}
    return sum(count for reason, count in reasons.items() if reason.startswith(DOWNLOAD_FAILED))


def progress_of(mirror: Mirror, run: SyncRun | None, now: datetime | None = None) -> dict:
    """One mirror's entry in the progress endpoint's answer (`run` its latest run)."""
    shown = figures(run, now)
    return {
        "id": mirror.pk,
        "status": {"value": mirror.status, "label": mirror.status_label},
        "active": mirror.is_active,
        "run": RunProgressSerializer(run).data if run is not None else None,
        "figures": shown,
        "html": _fragment(mirror, run, shown),
    }


def progress_answer(mirrors: Iterable[Mirror]) -> dict:
    """The progress endpoint's answer for mirrors read with `with_latest_runs`."""
    now = timezone.now()
    found = [progress_of(m, m.shown_run, now) for m in mirrors]
    return {"mirrors": found, "active": any(entry["active"] for entry in found)}


def status_cell(mirror: Mirror, url: str) -> str:
    """The live status of a mirror in a page (list, details): rendered now from its active run
    (prefetched) and kept up to date by progress.js from the endpoint at `url`."""
    run = mirror.active_run() if mirror.is_active else None
    inner = _fragment(mirror, run, figures(run))
    return render_to_string(
        "admin/mirrors_app/mirror/live_status.html",
        {"live_cell": {"mirror": mirror, "url": url, "inner": inner}},
    )


def _fragment(mirror: Mirror, run: SyncRun | None, shown: dict) -> str:
    # One name in the context: the page rendering this must not see a `run` of ours.
    return render_to_string(TEMPLATE, {"live": {"mirror": mirror, "run": run, "figures": shown}})

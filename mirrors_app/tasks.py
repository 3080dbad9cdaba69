"""Celery tasks: thin, explicitly named wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from . import services, sync


@shared_task(name="mirrors.sync_mirror")
def sync_mirror(mirror_id: int, run_id: int | None = None) -> str | None:
    """Run a mirror: the given queued run, or (from the schedule) a new one unless one is active.

    No time limit: a full mirror of a large channel legitimately runs for hours; a run whose
    worker dies is failed by `fail_stale_runs` instead.
    """
    if run_id is None:
        run = services.sync_run_create_scheduled(mirror_id=mirror_id)
        if run is None:
            return None
        run_id = run.pk
    run = services.sync_run_claim(run_id=run_id)
    if run is None:
        return None
    return sync.run_sync(run)


@shared_task(name="mirrors.fail_stale_runs")
def fail_stale_runs() -> int:
    """Fail runs left behind by a worker that died; send again the task of runs whose
    message was lost."""
    services.sync_runs_requeue_lost()
    return services.sync_runs_fail_stale()

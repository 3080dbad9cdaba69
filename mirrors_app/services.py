"""Mirror operations shared by the admin, the API, management commands and tasks.

Run state changes are conditional UPDATEs (`state` must still be what we expect), so a worker
claiming a run and a user stopping it can never both win. The mirror's `status` follows its
latest run's state.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from channels_app.formats import FORMATS, FormatError
from channels_app.models import Channel
from channels_app.tasks import publish_channel
from policies_app.enforcement import request_enforcement
from psm.audit import audit_record
from psm.http import UpstreamClient, UpstreamError
from psm.redaction import scrub

from . import schedules
from .models import Mirror, SyncRun
from .sync.fetch_state import forget_mirror_documents

logger = logging.getLogger(__name__)
State = SyncRun.State


class MirrorBusy(Exception):
    """The mirror already has a run queued, running or stopping."""

    def __init__(self, mirror: Mirror, run: SyncRun | None) -> None:
        self.mirror, self.run = mirror, run
        detail = f" (run #{run.pk}, {run.get_state_display().lower()})" if run else ""
        super().__init__(f"Mirror {mirror.name!r} already has a run in progress{detail}.")


class MirrorNotRunning(Exception):
    """Stop was asked of a mirror with no active run."""

    def __init__(self, mirror: Mirror) -> None:
        super().__init__(f"Mirror {mirror.name!r} is not running.")


def mirror_save(*, mirror: Mirror, user=None, run_now: bool = False) -> SyncRun | None:
    """Validate and save the mirror, keep its schedule in step, and run it now if asked.

    Returns the queued run when `run_now` is set.
    """
    with transaction.atomic():
        created = mirror.pk is None
        if created and mirror.created_by is None and user and user.is_authenticated:
            mirror.created_by = user
        before = None if created else _effective_policy_id(mirror.pk)
        mirror.full_clean()
        mirror.save()
        schedules.schedule_sync(mirror)
        audit_record(
            actor=user,
            action="mirror.create" if created else "mirror.change",
            target=mirror,
            channel=mirror.channel.path,
        )
        if not created and before != _effective_policy_id(mirror.pk):
            _enforce_new_policy(mirror, user)
    if run_now:
        # After the save's transaction: MirrorBusy must not roll the saved settings back.
        return mirror_run_now(mirror=mirror, user=user)
    return None


def _effective_policy_id(mirror_id: int) -> int | None:
    """The stored mirror's policy, else its channel's."""
    own, channels = Mirror.objects.filter(pk=mirror_id).values_list(
        "policy_id", "channel__policy_id"
    )[0]
    return own or channels


def _enforce_new_policy(mirror: Mirror, user) -> None:
    """Decide again what the mirror holds under its new effective policy, soon (a task)."""
    policy = mirror.effective_policy()
    request_enforcement(
        trigger=f"policy of mirror {mirror.name!r} now {policy.name if policy else 'none'!r}",
        mirror_ids=[mirror.pk],
        user=user,
    )


def mirror_check_source(*, mirror: Mirror) -> list[str]:
    """Check a new source URL (a new mirror's, or a changed one; else []) with a request or
    two: what makes it not look like a repository of the mirror's type, or why it could not
    be checked. Advice: never blocks a save. Through the upstream client, so the allowlist and
    address checks apply to it as to every fetch."""
    if not mirror.source_changed or mirror.kind not in FORMATS:
        return []
    client = UpstreamClient(retries=0)  # someone is waiting for the answer
    try:
        problems = mirror.format.probe_source(client, mirror.source_url, mirror.options)
    except (UpstreamError, FormatError) as exc:
        problems = [f"PSM could not check the source: {exc}."]
    except Exception as exc:  # a bug in a check must not stop the save it only advises on
        logger.exception("checking the source of mirror %r failed", mirror.name)
        problems = [f"PSM could not check the source: {exc.__class__.__name__}."]
    finally:
        client.close()
    return [scrub(problem, mirror.source_url) for problem in problems]


def mirror_delete(*, mirror: Mirror, with_packages: bool = False, user=None) -> None:
    """Delete the mirror, its schedule and its runs; its packages stay unless asked."""
    with transaction.atomic():
        audit_record(
            actor=user,
            action="mirror.delete",
            target=mirror,
            channel=mirror.channel.path,
            with_packages=with_packages,
        )
        if with_packages:
            # Dropped from the index at the next publish, served until then.
            mirror.packages.update(removed=True, updated_at=timezone.now())
            channel = Channel.objects.select_for_update().get(pk=mirror.channel_id)
            channel.index_extras.pop(str(mirror.pk), None)
            Channel.objects.filter(pk=channel.pk).update(
                index_extras=channel.index_extras, content_version=F("content_version") + 1
            )
            transaction.on_commit(lambda: publish_channel.delay(channel.pk))
        pk = mirror.pk
        mirror.delete()  # the post_delete signal removes the PeriodicTask
    forget_mirror_documents(pk)  # at worst (rolled back after all) re-syncs compare digests


def sync_run_create(*, mirror: Mirror, trigger: str = SyncRun.Trigger.MANUAL, user=None) -> SyncRun:
    """Record a queued run for the mirror; raise MirrorBusy if one is already active."""
    try:
        with transaction.atomic():
            run = SyncRun.objects.create(
                mirror=mirror,
                trigger=trigger,
                requested_by=user if user is not None and user.is_authenticated else None,
            )
    except IntegrityError:
        raise MirrorBusy(mirror, mirror.active_run()) from None
    Mirror.objects.filter(pk=mirror.pk).update(status=Mirror.Status.QUEUED)
    mirror.status = Mirror.Status.QUEUED
    return run


def mirror_run_now(*, mirror: Mirror, user=None, trigger: str = SyncRun.Trigger.MANUAL) -> SyncRun:
    """Queue a run of the mirror on a worker; raise MirrorBusy if one is active."""
    from .tasks import sync_mirror

    with transaction.atomic():
        run = sync_run_create(mirror=mirror, trigger=trigger, user=user)
        action = "mirror.restart" if trigger == SyncRun.Trigger.RESTART else "mirror.run"
        audit_record(actor=user, action=action, target=mirror, run=run.pk)
        transaction.on_commit(lambda: sync_mirror.delay(mirror_id=mirror.pk, run_id=run.pk))
    return run


def mirror_restart(*, mirror: Mirror, user=None) -> SyncRun:
    """Queue a run that starts from the beginning, ignoring any progress of earlier runs."""
    return mirror_run_now(mirror=mirror, user=user, trigger=SyncRun.Trigger.RESTART)


def mirror_stop(*, mirror: Mirror, user=None) -> SyncRun:
    """Ask the mirror's active run to stop; a queued run stops at once, a running one soon."""
    run = _stop(mirror)
    audit_record(actor=user, action="mirror.stop", target=mirror, run=run.pk)
    return run


def _stop(mirror: Mirror) -> SyncRun:
    for _ in range(3):  # the run may change state under us; retry the conditional updates
        run = mirror.active_run()
        if run is None:
            raise MirrorNotRunning(mirror)
        if run.state == State.STOPPING:
            return run
        now = timezone.now()
        if run.state == State.QUEUED and _transition(
            run, {State.QUEUED}, State.STOPPED, finished_at=now, step="stopped before it started"
        ):
            return run
        if run.state == State.RUNNING and _transition(run, {State.RUNNING}, State.STOPPING):
            return run
    raise MirrorNotRunning(mirror)


def sync_run_create_scheduled(*, mirror_id: int) -> SyncRun | None:
    """Create the run for a scheduled tick, or record it as skipped if a run is active."""
    mirror = Mirror.objects.filter(pk=mirror_id).first()
    if mirror is None:
        logger.warning("scheduled run of deleted mirror %s ignored", mirror_id)
        return None
    try:
        return sync_run_create(mirror=mirror, trigger=SyncRun.Trigger.SCHEDULE)
    except MirrorBusy as busy:
        now = timezone.now()
        SyncRun.objects.create(
            mirror=mirror,
            trigger=SyncRun.Trigger.SCHEDULE,
            state=State.SKIPPED,
            finished_at=now,
            error=f"Skipped: run #{busy.run.pk if busy.run else '?'} was still in progress.",
        )
        return None


def sync_run_claim(*, run_id: int) -> SyncRun | None:
    """Move a queued run to running for this worker; None if it was stopped or taken."""
    run = SyncRun.objects.select_related("mirror").filter(pk=run_id).first()
    if run is None:
        return None
    now = timezone.now()
    if not _transition(run, {State.QUEUED}, State.RUNNING, started_at=now, heartbeat_at=now):
        return None
    return run


def sync_run_finish(*, run: SyncRun, state: str, error: str = "", warnings: str = "") -> bool:
    """Record how the run ended: why it failed (`error`), what a run that did not fail could
    not do or find (`warnings`, one a line). False if it was no longer running (e.g. failed as
    stale)."""
    now = timezone.now()
    done = _transition(
        run,
        {State.RUNNING, State.STOPPING},
        state,
        finished_at=now,
        heartbeat_at=now,
        error=error,
        warnings=warnings,
    )
    if done and state != State.FAILED:
        Mirror.objects.filter(pk=run.mirror_id).update(last_synced_at=now)
    return done


def sync_runs_fail_stale(*, now=None) -> int:
    """Fail runs whose worker stopped reporting (it died); return how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PSM_RUN_STALE_AFTER)
    failed = 0
    for run in SyncRun.objects.stale(heartbeat_before=cutoff):
        failed += _transition(
            run,
            {State.RUNNING, State.STOPPING},
            State.FAILED,
            finished_at=now,
            error=f"The worker stopped reporting (no heartbeat since {run.heartbeat_at:%c}).",
        )
    return failed


def sync_runs_requeue_lost(*, now=None) -> int:
    """Send the task again for runs queued longer than PSM_RUN_STALE_AFTER: their message may
    have been lost with a killed worker that had reserved it, or with the broker's data. A
    duplicate is harmless: claiming a run is atomic, so only one delivery runs it."""
    from .tasks import sync_mirror

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PSM_RUN_STALE_AFTER)
    sent = 0
    for run in SyncRun.objects.waiting_since(cutoff).only("pk", "mirror_id"):
        if SyncRun.objects.waiting_since(cutoff).filter(pk=run.pk).update(heartbeat_at=now):
            logger.warning(
                "run %s still queued after %s s: task sent again",
                run.pk,
                settings.PSM_RUN_STALE_AFTER,
            )
            sync_mirror.delay(mirror_id=run.mirror_id, run_id=run.pk)
            sent += 1
    return sent


def _transition(run: SyncRun, from_states: set[str], to: str, **fields) -> bool:
    """Change the run's state if it is still in `from_states`; the mirror's status follows."""
    for name in ("error", "warnings"):
        if fields.get(name):
            fields[name] = scrub(fields[name])  # they quote URLs: never with their secrets
    with transaction.atomic():
        changed = SyncRun.objects.filter(pk=run.pk, state__in=from_states).update(
            state=to, **fields
        )
        if changed:
            Mirror.objects.filter(pk=run.mirror_id).update(status=to)
    if changed:
        run.state = to
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(changed)


def mirror_policy_apply(*, mirror: Mirror, dry_run: bool = False, user=None) -> dict:
    """Preview (`dry_run`) or apply the mirror's effective policy to what it already holds,
    without fetching the upstream index again; applying publishes the channel. Applying
    raises MirrorBusy while a run is active."""
    from .sync.policy import packages_decide, policy_fingerprint

    if not dry_run and (run := mirror.active_run()) is not None:
        # The run decides what it ingests with the policy as it is; applying meanwhile would
        # race its writes. The run applies a changed policy itself.
        raise MirrorBusy(mirror, run)
    change = packages_decide(mirror=mirror, dry_run=dry_run)
    if not dry_run:
        policy = mirror.effective_policy()
        audit_record(
            actor=user,
            action="policy.apply",
            target=mirror,
            policy=policy.name if policy else None,
            entering=len(change.entering),
            leaving=len(change.leaving),
        )
        mirror.policy_fingerprint = policy_fingerprint(mirror)
        Mirror.objects.filter(pk=mirror.pk).update(policy_fingerprint=mirror.policy_fingerprint)
        transaction.on_commit(lambda: publish_channel.delay(mirror.channel_id))
    return change.as_dict()

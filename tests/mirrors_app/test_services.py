"""Mirror services: run now, stop, restart, claiming, schedule ticks, stale runs, delete."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from channels_app.models import Package
from mirrors_app import services
from mirrors_app.models import Mirror, SyncRun
from tests.factories import MirrorFactory, SyncRunFactory, UserFactory

pytestmark = pytest.mark.django_db
State = SyncRun.State


@pytest.fixture
def delay():
    """Record what would be sent to the broker instead of sending it (our task's wrapper)."""
    with mock.patch("mirrors_app.tasks.sync_mirror.delay") as patched:
        yield patched


def _reload(obj):
    obj.refresh_from_db()
    return obj


def test_run_now_queues_a_run_and_enqueues_it_on_commit(delay, django_capture_on_commit_callbacks):
    mirror = MirrorFactory()
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = services.mirror_run_now(mirror=mirror, user=user)
        delay.assert_not_called()  # nothing is sent before the run is committed
    assert run.state == State.QUEUED
    assert run.trigger == SyncRun.Trigger.MANUAL
    assert run.requested_by == user
    assert _reload(mirror).status == Mirror.Status.QUEUED

    assert len(callbacks) == 1
    callbacks[0]()
    delay.assert_called_once_with(mirror_id=mirror.pk, run_id=run.pk)


def test_run_now_rolled_back_enqueues_nothing(delay, django_capture_on_commit_callbacks):
    mirror = MirrorFactory()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.mirror_run_now(mirror=mirror)
            raise RuntimeError("roll back")
    assert callbacks == []
    delay.assert_not_called()
    assert not SyncRun.objects.exists()


def test_second_run_now_while_one_is_active_raises_mirror_busy(delay):
    mirror = MirrorFactory(name="forge")
    first = services.mirror_run_now(mirror=mirror)
    with pytest.raises(services.MirrorBusy) as caught:
        services.mirror_run_now(mirror=mirror)
    assert str(caught.value) == (
        f"Mirror 'forge' already has a run in progress (run #{first.pk}, queued)."
    )
    assert caught.value.run == first
    assert SyncRun.objects.count() == 1


@pytest.mark.parametrize("active", [State.QUEUED, State.RUNNING, State.STOPPING])
def test_database_allows_one_active_run_per_mirror(active):
    mirror = MirrorFactory()
    SyncRunFactory(mirror=mirror, state=active)
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncRunFactory(mirror=mirror, state=State.QUEUED)


def test_database_allows_many_finished_runs_and_other_mirrors_runs():
    mirror = MirrorFactory()
    for state in (State.COMPLETED, State.FAILED, State.STOPPED, State.SKIPPED, State.COMPLETED):
        SyncRunFactory(mirror=mirror, state=state)
    SyncRunFactory(mirror=mirror, state=State.RUNNING)
    SyncRunFactory(state=State.RUNNING)  # another mirror
    assert SyncRun.objects.count() == 7


def test_stop_of_a_queued_run_stops_it_at_once(delay):
    mirror = MirrorFactory()
    run = services.mirror_run_now(mirror=mirror)
    stopped = services.mirror_stop(mirror=mirror)
    assert stopped.pk == run.pk
    run = _reload(run)
    assert run.state == State.STOPPED
    assert run.finished_at is not None
    assert _reload(mirror).status == Mirror.Status.STOPPED


def test_stop_of_a_running_run_asks_it_to_stop():
    mirror = MirrorFactory()
    run = SyncRunFactory(mirror=mirror, state=State.RUNNING)
    services.mirror_stop(mirror=mirror)
    run = _reload(run)
    assert run.state == State.STOPPING
    assert run.finished_at is None
    assert _reload(mirror).status == Mirror.Status.STOPPING


def test_stop_of_a_stopping_run_is_harmless():
    mirror = MirrorFactory()
    run = SyncRunFactory(mirror=mirror, state=State.STOPPING)
    assert services.mirror_stop(mirror=mirror).pk == run.pk
    assert _reload(run).state == State.STOPPING


def test_stop_with_nothing_active_raises_mirror_not_running():
    mirror = MirrorFactory(name="forge")
    SyncRunFactory(mirror=mirror, state=State.COMPLETED)
    with pytest.raises(services.MirrorNotRunning, match="Mirror 'forge' is not running."):
        services.mirror_stop(mirror=mirror)


def test_restart_creates_a_run_triggered_by_restart(delay):
    mirror = MirrorFactory()
    SyncRunFactory(mirror=mirror, state=State.STOPPED)
    run = services.mirror_restart(mirror=mirror)
    assert run.trigger == SyncRun.Trigger.RESTART
    assert run.state == State.QUEUED


def test_restart_refuses_while_a_run_is_active(delay):
    mirror = MirrorFactory()
    SyncRunFactory(mirror=mirror, state=State.RUNNING)
    with pytest.raises(services.MirrorBusy):
        services.mirror_restart(mirror=mirror)


def test_claim_moves_a_queued_run_to_running_once():
    run = SyncRunFactory(state=State.QUEUED)
    claimed = services.sync_run_claim(run_id=run.pk)
    assert claimed is not None
    assert claimed.state == State.RUNNING
    run = _reload(run)
    assert run.state == State.RUNNING
    assert run.started_at is not None
    assert run.heartbeat_at is not None
    assert _reload(run.mirror).status == Mirror.Status.RUNNING
    assert services.sync_run_claim(run_id=run.pk) is None


def test_claim_of_a_run_stopped_before_it_started_returns_none(delay):
    mirror = MirrorFactory()
    run = services.mirror_run_now(mirror=mirror)
    services.mirror_stop(mirror=mirror)
    assert services.sync_run_claim(run_id=run.pk) is None
    assert _reload(run).state == State.STOPPED


def test_claim_of_a_missing_run_returns_none():
    assert services.sync_run_claim(run_id=987654) is None


def test_schedule_tick_queues_a_run_when_none_is_active():
    mirror = MirrorFactory()
    run = services.sync_run_create_scheduled(mirror_id=mirror.pk)
    assert run.state == State.QUEUED
    assert run.trigger == SyncRun.Trigger.SCHEDULE


def test_schedule_tick_records_a_skipped_run_when_one_is_active():
    mirror = MirrorFactory()
    active = SyncRunFactory(mirror=mirror, state=State.RUNNING)
    assert services.sync_run_create_scheduled(mirror_id=mirror.pk) is None
    skipped = SyncRun.objects.get(state=State.SKIPPED)
    assert skipped.mirror == mirror
    assert skipped.trigger == SyncRun.Trigger.SCHEDULE
    assert skipped.finished_at is not None
    assert f"run #{active.pk}" in skipped.error
    assert _reload(active).state == State.RUNNING
    assert mirror.latest_run() == active  # skipped runs are not the mirror's latest


def test_schedule_tick_for_a_deleted_mirror_is_ignored():
    mirror = MirrorFactory()
    pk = mirror.pk
    mirror.delete()
    assert services.sync_run_create_scheduled(mirror_id=pk) is None
    assert not SyncRun.objects.exists()


@pytest.mark.parametrize("state", [State.COMPLETED, State.FAILED, State.STOPPED])
def test_finish_sets_the_mirror_status_and_last_synced_at(state):
    mirror = MirrorFactory()
    run = services.sync_run_claim(run_id=SyncRunFactory(mirror=mirror).pk)
    assert services.sync_run_finish(run=run, state=state, error="why") is True
    run = _reload(run)
    assert run.state == state
    assert run.finished_at is not None
    assert run.error == "why"
    mirror = _reload(mirror)
    assert mirror.status == state
    # "Last updated" is the last run that brought anything in; a failed run did not.
    expected = None if state == State.FAILED else run.finished_at
    assert mirror.last_synced_at == expected


def test_finish_of_a_run_no_longer_running_changes_nothing():
    mirror = MirrorFactory()
    run = SyncRunFactory(mirror=mirror, state=State.FAILED)
    assert services.sync_run_finish(run=run, state=State.COMPLETED) is False
    assert _reload(run).state == State.FAILED
    assert _reload(mirror).last_synced_at is None


def test_stale_runs_are_failed_but_fresh_ones_are_not(settings):
    settings.PSM_RUN_STALE_AFTER = 600
    now = timezone.now()
    stale = SyncRunFactory(state=State.RUNNING, heartbeat_at=now - timedelta(seconds=601))
    stale_stopping = SyncRunFactory(state=State.STOPPING, heartbeat_at=now - timedelta(hours=5))
    fresh = SyncRunFactory(state=State.RUNNING, heartbeat_at=now - timedelta(seconds=599))
    queued = SyncRunFactory(state=State.QUEUED)
    assert services.sync_runs_fail_stale(now=now) == 2
    for run in (stale, stale_stopping):
        run = _reload(run)
        assert run.state == State.FAILED
        assert "stopped reporting" in run.error
        assert _reload(run.mirror).status == Mirror.Status.FAILED
    assert _reload(fresh).state == State.RUNNING
    assert _reload(queued).state == State.QUEUED


def _package(mirror, filename):
    return Package.objects.create(
        channel=mirror.channel, mirror=mirror, filename=filename, name="pkg", version="1"
    )


def test_delete_keeps_the_mirrors_packages_by_default():
    mirror = MirrorFactory()
    run = SyncRunFactory(mirror=mirror, state=State.COMPLETED)
    packages = [_package(mirror, "a.conda"), _package(mirror, "b.conda")]
    services.mirror_delete(mirror=mirror)
    assert not Mirror.objects.filter(pk=mirror.pk).exists()
    assert not SyncRun.objects.filter(pk=run.pk).exists()
    for package in packages:
        package = _reload(package)
        assert package.mirror is None
        assert package.channel == mirror.channel


def test_delete_with_packages_removes_them_at_the_next_publish(
    django_capture_on_commit_callbacks,
):
    mirror = MirrorFactory()
    other = MirrorFactory(channel=mirror.channel)
    _package(mirror, "a.conda")
    kept = _package(other, "b.conda")
    with django_capture_on_commit_callbacks() as callbacks:
        services.mirror_delete(mirror=mirror, with_packages=True)
    # Still served until the publish that drops them, so no index lists a missing file.
    assert list(Package.objects.filter(removed=False)) == [kept]
    assert Package.objects.filter(removed=True).count() == 1
    assert len(callbacks) == 1  # the publish is queued


def test_save_with_run_now_returns_the_queued_run(delay, django_capture_on_commit_callbacks):
    mirror = MirrorFactory.build(channel=MirrorFactory().channel, source_url="http://127.0.0.1/c")
    with django_capture_on_commit_callbacks(execute=True):
        run = services.mirror_save(mirror=mirror, run_now=True)
    assert run.mirror == mirror
    delay.assert_called_once_with(mirror_id=mirror.pk, run_id=run.pk)

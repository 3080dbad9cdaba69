"""The sync orchestrator and the Celery task that wraps it, against loopback upstreams."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mirrors_app import services, tasks
from mirrors_app.models import Mirror, SyncRun
from mirrors_app.sync import run_sync
from tests.conftest import conda_record
from tests.factories import MirrorFactory, SyncRunFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.loopback import Gate

pytestmark = pytest.mark.django_db
State = SyncRun.State


def _claimed_run(source_url: str, **mirror_fields) -> SyncRun:
    mirror = MirrorFactory(source_url=source_url, **mirror_fields)
    run = SyncRunFactory(mirror=mirror, state=State.QUEUED)
    claimed = services.sync_run_claim(run_id=run.pk)
    assert claimed is not None
    return claimed


def _reload(obj):
    obj.refresh_from_db()
    return obj


def test_run_against_a_conda_channel_completes_and_counts_every_record(conda_upstream):
    run = _claimed_run(conda_upstream.url)
    assert run_sync(run) == State.COMPLETED
    run = _reload(run)
    assert run.state == State.COMPLETED
    assert run.seen == 3
    assert run.step == "done"
    assert run.heartbeat_at is not None
    assert run.finished_at is not None
    assert run.error == ""
    mirror = _reload(run.mirror)
    assert mirror.status == Mirror.Status.COMPLETED
    assert mirror.last_synced_at == run.finished_at


def test_run_honours_the_mirrors_subdirs_option(conda_upstream):
    run = _claimed_run(conda_upstream.url, options={"subdirs": ["noarch"]})
    assert run_sync(run) == State.COMPLETED
    assert _reload(run).seen == 2


def test_malformed_repodata_in_one_subdir_is_reported_and_the_others_still_sync(conda_upstream):
    conda_upstream.write("linux-64/repodata.json", b"<html>not json</html>")
    run = _claimed_run(conda_upstream.url)
    assert run_sync(run) == State.COMPLETED
    run = _reload(run)
    assert run.error == ""
    assert f"linux-64: {conda_upstream.url}/linux-64/repodata.json" in run.warnings
    assert "repodata must be a JSON object" in run.warnings
    assert run.filtered_reasons == {"index unreadable: linux-64": 1}
    assert set(run.mirror.packages.values_list("unit", flat=True)) == {"noarch"}


def test_run_against_malformed_repodata_everywhere_fails_naming_the_url(conda_upstream):
    conda_upstream.write("linux-64/repodata.json", b"<html>not json</html>")
    conda_upstream.write("noarch/repodata.json", b'{"packages": {')
    run = _claimed_run(conda_upstream.url)
    assert run_sync(run) == State.FAILED
    run = _reload(run)
    assert run.state == State.FAILED
    assert f"{conda_upstream.url}/linux-64/repodata.json" in run.error
    assert "not valid JSON" in run.error
    assert _reload(run.mirror).status == Mirror.Status.FAILED
    assert not run.mirror.packages.exists()


def test_run_against_an_unreachable_upstream_fails_with_a_clear_error(refused_url):
    run = _claimed_run(refused_url + "/conda-forge")
    assert run_sync(run) == State.FAILED
    run = _reload(run)
    where = refused_url.removeprefix("http://")
    # One sentence after the URL: no exception reprs.
    assert run.error == (
        f"{refused_url}/conda-forge/channeldata.json: could not connect to {where}: "
        "connection refused"
    )
    assert "HTTPConnectionPool" not in run.error and "object at 0x" not in run.error
    assert run.finished_at is not None
    assert _reload(run.mirror).status == Mirror.Status.FAILED


def test_run_against_an_upstream_server_error_fails(upstream):
    upstream.fail["/channel/channeldata.json"] = 503
    run = _claimed_run(upstream.url + "/channel")
    assert run_sync(run) == State.FAILED
    assert "HTTP 503" in _reload(run).error


def test_stop_before_the_first_batch_ends_the_run_stopped(conda_upstream):
    run = _claimed_run(conda_upstream.url)
    services.mirror_stop(mirror=run.mirror)
    assert run_sync(run) == State.STOPPED
    run = _reload(run)
    assert run.state == State.STOPPED
    assert run.finished_at is not None
    assert run.error == ""
    assert _reload(run.mirror).status == Mirror.Status.STOPPED


def _when_reading(unit: str, action, monkeypatch) -> None:
    """Do `action()` as the run starts reading `unit`'s index (on the run's own thread)."""
    from mirrors_app.sync import progress as progress_module

    real_step = progress_module.Progress.step

    def step(self, text, **kwargs):
        real_step(self, text, **kwargs)
        if text.startswith(f"{unit}:"):
            action()
            self.flush()

    monkeypatch.setattr(progress_module.Progress, "step", step)


def test_stop_mid_run_ends_stopped_and_keeps_the_counters(conda_upstream, monkeypatch):
    # linux-64 (1 record) is read before noarch (2): ask to stop as noarch's turn comes.
    run = _claimed_run(conda_upstream.url)
    _when_reading("noarch", lambda: services.mirror_stop(mirror=run.mirror), monkeypatch)
    assert run_sync(run) == State.STOPPED
    run = _reload(run)
    assert run.state == State.STOPPED
    assert run.seen == 1  # linux-64 was read in full before the stop was seen
    # What the run completed is kept and published.
    assert list(run.mirror.packages.values_list("unit", flat=True)) == ["linux-64"]
    assert run.mirror.channel.published_files.filter(path="linux-64/repodata.json").exists()
    assert run.finished_at is not None
    assert _reload(run.mirror).status == Mirror.Status.STOPPED


def test_large_index_is_counted_across_several_batches(upstream):
    records = {f"pkg{i}-1.0-0.conda": conda_record(f"pkg{i}", "1.0") for i in range(2500)}
    upstream.write("channeldata.json", {"subdirs": ["noarch"]})
    upstream.write("noarch/repodata.json", {"packages.conda": records})
    run = _claimed_run(upstream.url)
    assert run_sync(run) == State.COMPLETED
    assert _reload(run).seen == 2500


def test_mirror_deleted_mid_run_does_not_crash(conda_upstream, monkeypatch):
    run = _claimed_run(conda_upstream.url)
    _when_reading(
        "noarch", lambda: services.mirror_delete(mirror=Mirror.objects.get()), monkeypatch
    )
    assert run_sync(run) == State.STOPPED
    assert not SyncRun.objects.exists()
    assert not Mirror.objects.exists()


def test_run_whose_mirror_was_deleted_before_it_started_ends_quietly(conda_upstream):
    run = _claimed_run(conda_upstream.url)
    Mirror.objects.all().delete()
    assert run_sync(run) == State.STOPPED


def test_task_runs_the_given_queued_run(conda_upstream):
    mirror = MirrorFactory(source_url=conda_upstream.url)
    run = services.sync_run_create(mirror=mirror)
    assert tasks.sync_mirror(mirror_id=mirror.pk, run_id=run.pk) == State.COMPLETED
    assert _reload(run).state == State.COMPLETED
    assert _reload(run).seen == 3


def test_task_does_nothing_for_a_run_stopped_before_it_started(conda_upstream):
    mirror = MirrorFactory(source_url=conda_upstream.url)
    run = services.sync_run_create(mirror=mirror)
    services.mirror_stop(mirror=mirror)
    assert tasks.sync_mirror(mirror_id=mirror.pk, run_id=run.pk) is None
    assert _reload(run).state == State.STOPPED
    assert _reload(run).started_at is None


def test_scheduled_task_creates_and_completes_a_run(conda_upstream):
    mirror = MirrorFactory(source_url=conda_upstream.url)
    assert tasks.sync_mirror(mirror_id=mirror.pk) == State.COMPLETED
    (run,) = SyncRun.objects.all()
    assert run.trigger == SyncRun.Trigger.SCHEDULE
    assert run.state == State.COMPLETED
    assert run.seen == 3


def test_scheduled_task_skips_while_a_run_is_active(conda_upstream):
    mirror = MirrorFactory(source_url=conda_upstream.url)
    active = SyncRunFactory(mirror=mirror, state=State.RUNNING)
    assert tasks.sync_mirror(mirror_id=mirror.pk, run_id=None) is None
    assert _reload(active).state == State.RUNNING
    assert SyncRun.objects.filter(state=State.SKIPPED).count() == 1


def test_scheduled_task_for_a_deleted_mirror_does_nothing():
    assert tasks.sync_mirror(mirror_id=987654) is None
    assert not SyncRun.objects.exists()


def test_fail_stale_runs_task_fails_runs_without_a_heartbeat(settings):
    stale = SyncRunFactory(
        state=State.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=settings.PSM_RUN_STALE_AFTER + 5),
    )
    assert tasks.fail_stale_runs() == 1
    assert _reload(stale).state == State.FAILED


def test_the_stale_sweep_runs_often_enough_for_the_documented_bound(settings):
    """A dead worker's run fails within 1.1 x PSM_RUN_STALE_AFTER: the sweep looks every tenth."""
    entry = settings.CELERY_BEAT_SCHEDULE["fail-stale-runs"]
    assert entry["task"] == tasks.fail_stale_runs.name
    assert entry["schedule"] <= max(15.0, settings.PSM_RUN_STALE_AFTER / 10)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_follows_the_bytes_of_one_slow_download(tmp_path):
    """A run downloading one big file slowly is alive: its heartbeat moves while the bytes
    arrive (not only when a file ends), so the stale sweep does not fail it."""
    big = FakePackage("big", "1.0", files={"share/big.bin": os.urandom(3_500_000)})
    with ChannelServer(build_channel(tmp_path / "up", [big])) as source:
        source.throttle[f"/noarch/{big.filename}"] = 1_000_000  # 1 MiB chunks, about 3.5 s
        run = _claimed_run(source.url, mode=Mirror.Mode.ACTIVE)

        def work() -> None:
            try:
                run_sync(run)
            finally:
                connection.close()

        worker = threading.Thread(target=work)
        worker.start()
        beats = set()
        while worker.is_alive():
            step, beat = SyncRun.objects.values_list("step", "heartbeat_at").get(pk=run.pk)
            if step == "downloading package files":
                beats.add(beat)
            time.sleep(0.2)
        worker.join()
    assert _reload(run).state == State.COMPLETED, run.error
    assert len(beats) >= 2  # beats while one file downloads, not only when it ends


def _run_in_thread(run: SyncRun, pids: list[int]) -> tuple[threading.Thread, list[str]]:
    """run_sync on a thread of its own (its own database connection, whose pid goes to
    `pids`), as a worker runs it."""
    results: list[str] = []

    def work() -> None:
        try:
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    pids.append(cursor.fetchone()[0])
            results.append(run_sync(run))
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, results


@pytest.fixture
def gated_source(tmp_path):
    with ChannelServer(build_channel(tmp_path / "up", [FakePackage("alpha", "1.0")])) as source:
        source.delay = Gate("/channeldata.json", timeout=30)
        yield source
        source.delay.release.set()


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_database_connection_is_cut_fails_at_once_saying_so(gated_source):
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    run = _claimed_run(gated_source.url)
    pids: list[int] = []
    thread, results = _run_in_thread(run, pids)
    assert gated_source.delay.arrived.wait(30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pids[0]])
    gated_source.delay.release.set()
    thread.join(30)
    assert results == [State.FAILED]
    run = _reload(run)
    assert run.state == State.FAILED and run.finished_at is not None
    assert run.error.startswith("The database connection was lost: ")
    assert services.mirror_run_now(mirror=run.mirror).state == State.QUEUED  # not busy


@pytest.mark.django_db(transaction=True)
def test_a_run_the_sweep_failed_meanwhile_publishes_nothing(gated_source, settings):
    run = _claimed_run(gated_source.url)
    thread, results = _run_in_thread(run, [])
    assert gated_source.delay.arrived.wait(30)
    later = timezone.now() + timedelta(seconds=settings.PSM_RUN_STALE_AFTER + 1)
    assert services.sync_runs_fail_stale(now=later) == 1
    gated_source.delay.release.set()
    thread.join(30)
    assert results == [State.FAILED]
    run = _reload(run)
    assert run.state == State.FAILED and "stopped reporting" in run.error  # the sweep's word
    assert run.mirror.channel.published_files.count() == 0
    assert _reload(run.mirror.channel).published_at is None

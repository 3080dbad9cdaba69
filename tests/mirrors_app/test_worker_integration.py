"""Mirror runs through a real Celery worker process and a real broker.

The broker is PSM_TEST_BROKER_URL when set (Redis in CI), else the embedded file-system broker in
the shared PSM_DATA_DIR. The worker is started per test on the test database and killed after it.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mirrors_app import schedules, services
from mirrors_app.models import Mirror, SyncRun
from psm.celery import app as celery_app
from tests.factories import MirrorFactory, SyncRunFactory
from tests.fixtures.celery_worker import TIMEOUT, Worker, wait_until, worker_env
from tests.fixtures.loopback import Gate, LoopbackServer

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

State = SyncRun.State
TASK_DONE = re.compile(r"Task mirrors\.sync_mirror\[[^\]]+\] succeeded")


def wait_finished(run: SyncRun, worker: Worker) -> SyncRun:
    def finished() -> SyncRun | None:
        current = SyncRun.objects.get(pk=run.pk)
        return None if current.is_active else current

    return wait_until(finished, f"run #{run.pk} to finish", worker)


@pytest.fixture
def gated(conda_upstream):
    """The conda upstream again, holding each request for its channeldata.json until the test
    sets `gated.delay.release`; `gated.delay.arrived` is set when the first one comes."""
    with LoopbackServer(conda_upstream.root) as server:
        server.delay = Gate("/channeldata.json", timeout=TIMEOUT)
        yield server
        server.delay.release.set()


# --- Tests ------------------------------------------------------------------------------------


def test_worker_runs_a_queued_mirror_to_completion(worker, conda_upstream):
    mirror = MirrorFactory(source_url=conda_upstream.url)

    run = services.mirror_run_now(mirror=mirror)

    run = wait_finished(run, worker)
    assert run.state == State.COMPLETED, f"{run.error}\n{worker.output()}"
    assert run.seen == 3
    assert run.started_at is not None and run.finished_at is not None
    mirror.refresh_from_db()
    assert mirror.status == Mirror.Status.COMPLETED
    assert mirror.last_synced_at is not None


def test_scheduled_tick_while_a_run_is_active_is_recorded_as_skipped(worker):
    mirror = MirrorFactory()
    now = timezone.now()
    active = SyncRunFactory(mirror=mirror, state=State.RUNNING, started_at=now, heartbeat_at=now)
    Mirror.objects.filter(pk=mirror.pk).update(status=Mirror.Status.RUNNING)

    # What beat sends on the mirror's cron tick.
    celery_app.send_task(schedules.SYNC_TASK, kwargs={"mirror_id": mirror.pk})

    skipped = wait_until(
        lambda: SyncRun.objects.filter(mirror=mirror, state=State.SKIPPED).first(),
        "the skipped run",
        worker,
    )
    assert skipped.trigger == SyncRun.Trigger.SCHEDULE
    assert f"run #{active.pk}" in skipped.error
    assert skipped.finished_at is not None
    assert list(mirror.runs.active()) == [active]
    untouched = SyncRun.objects.get(pk=active.pk)
    assert untouched.state == State.RUNNING
    assert (untouched.started_at, untouched.heartbeat_at) == (now, now)
    mirror.refresh_from_db()
    assert mirror.status == Mirror.Status.RUNNING


def test_run_stopped_while_queued_is_not_run_by_the_worker(worker, conda_upstream):
    mirror = MirrorFactory(source_url=conda_upstream.url)

    with transaction.atomic():  # the task message is sent on commit, after the stop
        run = services.mirror_run_now(mirror=mirror)
        services.mirror_stop(mirror=mirror)

    wait_until(lambda: worker.saw(TASK_DONE), "the worker to handle the task", worker)
    run.refresh_from_db()
    assert run.state == State.STOPPED
    assert run.started_at is None
    assert run.seen == 0
    mirror.refresh_from_db()
    assert mirror.status == Mirror.Status.STOPPED


def test_stop_during_a_run_ends_it_stopped(worker, gated):
    mirror = MirrorFactory(source_url=gated.url)
    run = services.mirror_run_now(mirror=mirror)
    if not gated.delay.arrived.wait(TIMEOUT):
        pytest.fail(f"the worker never fetched the source index\n{worker.output()}")
    assert SyncRun.objects.get(pk=run.pk).state == State.RUNNING

    services.mirror_stop(mirror=mirror)
    assert SyncRun.objects.get(pk=run.pk).state == State.STOPPING
    gated.delay.release.set()

    run = wait_finished(run, worker)
    assert run.state == State.STOPPED, f"{run.error}\n{worker.output()}"
    assert run.finished_at is not None
    mirror.refresh_from_db()
    assert mirror.status == Mirror.Status.STOPPED
    assert mirror.last_synced_at is not None


BROKERS = [
    pytest.param(os.environ.get("PSM_TEST_BROKER_URL", ""), id="redis"),
    pytest.param(
        os.environ.get("PSM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"), id="rabbitmq"
    ),
]


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_a_worker_killed_mid_run_loses_no_queued_run(
    broker, transactional_db, conda_upstream, gated
):
    """kill -9 of a worker that is running one run while another is queued: the queued run is
    run by the next worker at once (a busy worker reserves no message it cannot start), the
    killed one is failed by the sweep, and a run whose message was lost is sent again."""
    # The default prefork pool, as deployed: its parent process reserves messages while a
    # child runs a task.
    first = Worker(worker_env(broker), pool="prefork")
    second = None
    try:
        first.wait_ready()
        busy = MirrorFactory(source_url=gated.url)
        killed = services.mirror_run_now(mirror=busy)
        if not gated.delay.arrived.wait(TIMEOUT):
            pytest.fail(f"the worker never fetched the source index\n{first.output()}")
        waiting = services.mirror_run_now(mirror=MirrorFactory(source_url=conda_upstream.url))
        time.sleep(1)  # time for the busy worker to reserve the message, were it allowed to
        first.kill()
        gated.delay.release.set()

        second = Worker(worker_env(broker), purge=False)
        second.wait_ready()
        assert wait_finished(waiting, second).state == State.COMPLETED, second.output()

        assert SyncRun.objects.get(pk=killed.pk).state == State.RUNNING
        later = timezone.now() + timedelta(seconds=settings.PSM_RUN_STALE_AFTER + 1)
        assert services.sync_runs_fail_stale(now=later) == 1
        assert SyncRun.objects.get(pk=killed.pk).state == State.FAILED
        again = services.mirror_run_now(mirror=busy)  # not refused as busy
        assert wait_finished(again, second).state == State.COMPLETED, second.output()

        # A queued run whose message the broker lost (no task was ever sent for it).
        long_ago = timezone.now() - timedelta(seconds=settings.PSM_RUN_STALE_AFTER + 1)
        lost = SyncRunFactory(
            mirror=MirrorFactory(source_url=conda_upstream.url),
            state=State.QUEUED,
            created_at=long_ago,
        )
        assert services.sync_runs_requeue_lost() == 1
        assert wait_finished(lost, second).state == State.COMPLETED, second.output()
    finally:
        first.stop()
        if second is not None:
            second.stop()

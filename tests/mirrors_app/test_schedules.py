"""Each mirror's django-celery-beat PeriodicTask follows its cron and dies with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from mirrors_app import schedules, services
from mirrors_app.models import Mirror
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db


def _save(channel=None, **fields) -> Mirror:
    channel = channel or ChannelFactory()
    values = {"name": "forge", "kind": channel.kind, "source_url": "http://127.0.0.1/c", **fields}
    mirror = Mirror(channel=channel, **values)
    services.mirror_save(mirror=mirror)
    return mirror


def test_saving_a_mirror_creates_exactly_one_periodic_task():
    mirror = _save(cron="15 3 * * 1")
    (task,) = PeriodicTask.objects.all()
    assert task.name == f"mirror-{mirror.pk}"
    assert task.task == "mirrors.sync_mirror"
    assert json.loads(task.kwargs) == {"mirror_id": mirror.pk}
    assert task.enabled
    schedule = task.crontab
    assert (
        schedule.minute,
        schedule.hour,
        schedule.day_of_month,
        schedule.month_of_year,
        schedule.day_of_week,
    ) == ("15", "3", "*", "*", "1")


def test_saving_again_does_not_add_a_second_task():
    mirror = _save()
    services.mirror_save(mirror=mirror)
    assert PeriodicTask.objects.count() == 1


def test_preset_cron_is_stored_expanded_on_the_schedule():
    _save(cron="@yearly")
    schedule = PeriodicTask.objects.get().crontab
    assert (schedule.minute, schedule.hour, schedule.day_of_month, schedule.month_of_year) == (
        "0",
        "0",
        "1",
        "1",
    )


def test_changing_the_cron_updates_the_same_periodic_task():
    mirror = _save(cron="0 0 1 * *")
    task = PeriodicTask.objects.get()
    mirror.cron = "30 2 * * *"
    services.mirror_save(mirror=mirror)
    updated = PeriodicTask.objects.get()
    assert updated.pk == task.pk
    assert (updated.crontab.minute, updated.crontab.hour, updated.crontab.day_of_month) == (
        "30",
        "2",
        "*",
    )


def test_mirrors_with_the_same_cron_share_one_crontab_schedule():
    channel = ChannelFactory()
    _save(channel, name="one", cron="0 4 * * *")
    _save(channel, name="two", cron="0 4 * * *")
    assert PeriodicTask.objects.count() == 2
    assert CrontabSchedule.objects.filter(minute="0", hour="4").count() == 1
    assert len({task.crontab_id for task in PeriodicTask.objects.all()}) == 1


def test_an_invalid_mirror_gets_no_schedule():
    with pytest.raises(ValidationError):
        _save(cron="hello")
    assert PeriodicTask.objects.count() == 0


def test_deleting_the_mirror_removes_its_periodic_task():
    keep = _save(name="keep")
    gone = _save(keep.channel, name="gone")
    services.mirror_delete(mirror=gone)
    assert list(PeriodicTask.objects.values_list("name", flat=True)) == [f"mirror-{keep.pk}"]


def test_deleting_the_channel_removes_its_mirrors_periodic_tasks():
    channel = ChannelFactory()
    _save(channel, name="one")
    _save(channel, name="two")
    other = _save(name="other")
    sub_mirror = _save(ChannelFactory(parent=channel), name="sub")
    assert PeriodicTask.objects.count() == 4
    channel.delete()
    assert list(PeriodicTask.objects.values_list("name", flat=True)) == [f"mirror-{other.pk}"]
    assert not Mirror.objects.filter(pk=sub_mirror.pk).exists()


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("*/30 * * * *", True),
        ("0 */6 * * *", True),
        ("0 * * * *", True),
        ("0 0,12 * * *", True),
        ("0 0 * * *", False),
        ("30 2 * * 1-5", False),
        ("0 0 1 * *", False),
        ("0 0 1 1 *", False),
    ],
)
def test_runs_more_than_daily(cron, expected):
    assert schedules.runs_more_than_daily(cron) is expected


def test_next_run_of_the_default_is_midnight_on_the_first():
    now = datetime(2024, 5, 17, 13, 45, tzinfo=UTC)
    assert schedules.next_run("0 0 1 * *", now) == datetime(2024, 6, 1, 0, 0, tzinfo=UTC)


def test_next_run_of_a_daily_schedule_is_later_today_or_tomorrow():
    now = datetime(2024, 5, 17, 13, 45, tzinfo=UTC)
    assert schedules.next_run("30 14 * * *", now) == datetime(2024, 5, 17, 14, 30, tzinfo=UTC)
    assert schedules.next_run("0 3 * * *", now) == datetime(2024, 5, 18, 3, 0, tzinfo=UTC)


def test_mirror_next_run_at_is_in_the_future():
    mirror = _save(cron="@daily")
    assert mirror.next_run_at() > datetime.now(UTC)

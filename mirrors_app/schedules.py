"""Cron strings and each mirror's django-celery-beat PeriodicTask.

The mirror's `cron` field is the source of truth; this module keeps one PeriodicTask per mirror
(named `mirror-<pk>`) in step with it. Per-mirror schedules are never put in settings, where
beat would overwrite them at start-up.
"""

from __future__ import annotations

import json
from datetime import datetime

from celery.schedules import crontab
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models.signals import post_delete
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.validators import crontab_validator

SYNC_TASK = "mirrors.sync_mirror"
DEFAULT_CRON = "0 0 1 * *"  # midnight on the 1st of every month
PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": DEFAULT_CRON,
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def normalize_cron(value: str) -> str:
    """Return the five-field cron string for `value` (presets such as @daily accepted).

    Raises ValidationError saying which field is wrong.
    """
    text = " ".join((value or "").split())
    text = PRESETS.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValidationError(
            f"{value!r} is not a cron expression: expected 5 fields "
            "(minute hour day-of-month month day-of-week) or a preset such as @daily."
        )
    try:
        crontab_validator(text)
        _crontab(text)
    except (ValidationError, ValueError) as exc:
        reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        raise ValidationError(f"{value!r} is not a valid cron expression: {reason}") from None
    return text


def _crontab(cron: str, **options) -> crontab:
    return crontab(**dict(zip(FIELDS, cron.split(" "), strict=True)), **options)


def runs_more_than_daily(cron: str) -> bool:
    """Whether the schedule can fire more than once on some day."""
    schedule = _crontab(cron)
    return len(schedule.minute) * len(schedule.hour) > 1


def next_run(cron: str, now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    # remaining_estimate counts from the schedule's own clock: make that clock `now` too.
    return now + _crontab(cron, nowfun=lambda: now).remaining_estimate(now)


def schedule_sync(mirror) -> PeriodicTask:
    """Create or update the mirror's PeriodicTask so beat runs it on the mirror's cron."""
    minute, hour, day_of_month, month_of_year, day_of_week = mirror.cron.split(" ")
    schedule, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        timezone=settings.CELERY_TIMEZONE,
    )
    task, _ = PeriodicTask.objects.update_or_create(
        name=schedule_name(mirror.pk),
        defaults={
            "task": SYNC_TASK,
            "crontab": schedule,
            "interval": None,
            "kwargs": json.dumps({"mirror_id": mirror.pk}),
            "enabled": True,
            "description": f"Scheduled run of mirror {mirror.name!r} in {mirror.channel}",
        },
    )
    return task


def schedule_name(mirror_pk: int) -> str:
    return f"mirror-{mirror_pk}"


def schedule_remove(mirror_pk: int) -> None:
    """Delete the mirror's PeriodicTask, if it has one."""
    deleted, _ = PeriodicTask.objects.filter(name=schedule_name(mirror_pk)).delete()
    if deleted:
        # Bulk deletes bypass django-celery-beat's change signal; tell beat explicitly.
        PeriodicTasks.update_changed()


def _remove_on_delete(sender, instance, **kwargs) -> None:
    # A signal, not the delete service alone: channel deletes cascade to mirrors in bulk.
    schedule_remove(instance.pk)


def connect_signals(mirror_model) -> None:
    post_delete.connect(_remove_on_delete, sender=mirror_model, dispatch_uid="mirror-schedule")

"""Celery tasks: thin, explicitly named wrappers that take ids and call plain functions."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from . import publishing, verification
from .models import Channel


@shared_task(name="channels.publish_channel")
def publish_channel(channel_id: int) -> bool:
    """Publish the channel's current packages, if its published index is behind."""
    channel = Channel.objects.filter(pk=channel_id).first()
    return channel is not None and publishing.channel_publish(channel=channel)


@shared_task(name="channels.collect_garbage")
def collect_garbage() -> int:
    """Delete stored files nothing references any more."""
    return publishing.collect_garbage()


@shared_task(name="channels.compress_channel")
def compress_channel(channel_id: int) -> int:
    """Add the bzip2 copies of a channel's published index files."""
    channel = Channel.objects.filter(pk=channel_id).first()
    return publishing.channel_compress(channel=channel) if channel else 0


@shared_task(name="channels.verify_storage")
def verify_storage() -> dict[str, int]:
    """Re-hash the stored files verified longest ago (within the per-run budget) and check
    the published indexes; damaged files are withdrawn (see channels_app/verification.py)."""
    report = verification.verify_storage(
        max_bytes=settings.PSM_VERIFY_BYTES_PER_RUN,
        max_files=settings.PSM_VERIFY_FILES_PER_RUN,
        repair=settings.PSM_VERIFY_REPAIR,
    )
    return report.as_dict()

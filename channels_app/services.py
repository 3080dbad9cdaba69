"""Writes to channels that more than one interface (admin, API) performs."""

from __future__ import annotations

from django.db import transaction

from psm.audit import audit_record

from . import tasks
from .models import Channel


@transaction.atomic
def channel_freeze(*, channel: Channel, user) -> bool:
    """Pin the channel's published index; return False if it was already frozen."""
    if channel.frozen:
        return False
    channel.freeze(user)
    channel.save(update_fields=["frozen", "frozen_by", "frozen_at", "updated_at"])
    audit_record(actor=user, action="channel.freeze", target=channel)
    return True


@transaction.atomic
def channel_unfreeze(*, channel: Channel, user) -> bool:
    """Let the channel publish again; return False if it was not frozen."""
    if not channel.frozen:
        return False
    channel.unfreeze()
    channel.save(update_fields=["frozen", "frozen_by", "frozen_at", "updated_at"])
    audit_record(actor=user, action="channel.unfreeze", target=channel)
    # Publish what was prepared while frozen, in one step, off the request.
    transaction.on_commit(lambda: tasks.publish_channel.delay(channel.pk))
    return True

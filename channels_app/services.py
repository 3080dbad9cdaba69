"""Writes to channels that more than one interface (admin, API) performs."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from psm.audit import audit_record

from . import tasks
from .models import Channel, ChannelGrant


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


@transaction.atomic
def channel_grants_set(*, channel: Channel, grants: Iterable[tuple], user) -> bool:
    """Make the channel's grants exactly these (group, level) pairs; False if nothing changed.

    Raise ValueError when a group is named twice."""
    wanted: dict[int, tuple] = {}
    for group, level in grants:
        if group.pk in wanted:
            raise ValueError(f"Group {group.name!r} is granted twice; give it one level.")
        wanted[group.pk] = (group, ChannelGrant.Level(level))
    current = {g.group_id: g for g in channel.grants.select_for_update()}
    removed = [pk for pk in current if pk not in wanted]
    changed = [
        current[pk]
        for pk, (_, level) in wanted.items()
        if pk in current and current[pk].level != level
    ]
    added = [
        ChannelGrant(channel=channel, group=group, level=level)
        for pk, (group, level) in wanted.items()
        if pk not in current
    ]
    if not (removed or changed or added):
        return False
    channel.grants.filter(group_id__in=removed).delete()
    for grant in changed:
        grant.level = wanted[grant.group_id][1]
    ChannelGrant.objects.bulk_update(changed, ["level"])
    ChannelGrant.objects.bulk_create(added)
    audit_record(
        actor=user,
        action="channel.grants",
        target=channel,
        grants={group.name: str(level) for group, level in wanted.values()},
    )
    return True

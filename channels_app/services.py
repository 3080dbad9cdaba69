"""Writes to channels that more than one interface (admin, API) performs."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q

from psm.audit import audit_record

from . import tasks
from .models import Channel, ChannelGrant
from .publishing import channel_publish

# Bookkeeping a save or a publish changes by itself: not a change anyone made.
_NOT_EDITS = {
    "created_at",
    "updated_at",
    "content_version",
    "published_version",
    "published_at",
    "index_extras",
    "render_marks",
}


@transaction.atomic
def channel_create(*, channel: Channel, user) -> Channel:
    """Save a validated new channel (or subchannel) and record who created it."""
    channel.save()
    audit_record(
        actor=user,
        action="channel.create",
        target=channel,
        path=channel.path,
        kind=channel.kind,
        visibility=channel.visibility,
    )
    return channel


@transaction.atomic
def channel_update(*, channel: Channel, user) -> list[str]:
    """Save a validated change to the channel; record who changed it and which fields."""
    before = Channel.objects.select_for_update().filter(pk=channel.pk).values().first() or {}
    changed = sorted(
        field.name
        for field in Channel._meta.concrete_fields
        if field.name not in _NOT_EDITS
        and field.attname in before
        and getattr(channel, field.attname) != before[field.attname]
    )
    channel.save()
    if "kind" in changed:
        # clean() allows it only for a channel without packages: render its (empty) index in
        # the new type, or the old type's files would stay the served ones.
        channel_publish(channel=channel, force=True)
    audit_record(
        actor=user, action="channel.change", target=channel, path=channel.path, fields=changed
    )
    if "policy" in changed:
        _enforce_new_policy(channel, user)
    return changed


def _enforce_new_policy(channel: Channel, user) -> None:
    """Decide again, under the channel's new policy, what its mirrors without a policy of
    their own hold (the other mirrors' policy did not change)."""
    from policies_app.enforcement import request_enforcement  # it imports this app

    policy = repr(channel.policy.name) if channel.policy_id else "none"
    request_enforcement(
        trigger=f"policy of channel {channel.path!r} set to {policy}",
        mirror_ids=channel.mirrors.filter(policy__isnull=True).values_list("pk", flat=True),
        user=user,
    )


@transaction.atomic
def channel_delete(*, channel: Channel, user) -> bool:
    """Delete the channel with its subchannels, mirrors and packages, recorded; False if it was
    already gone (e.g. deleted with its parent)."""
    row = Channel.objects.select_for_update().filter(pk=channel.pk)
    if not row.exists():
        return False
    # Deleted with it, so named in the record: its subchannels and every mirror of the tree.
    mirrors = channel.mirrors.model.objects.filter(Q(channel=channel) | Q(channel__parent=channel))
    audit_record(
        actor=user,
        action="channel.delete",
        target=channel,
        path=channel.path,
        subchannels=sorted(channel.subchannels.values_list("name", flat=True)),
        mirrors=sorted(mirrors.values_list("name", flat=True)),
    )
    channel.delete()
    return True


@transaction.atomic
def channel_freeze(*, channel: Channel, user) -> bool:
    """Pin the channel's published index; return False if it was already frozen.

    A channel never published yet is published first: until now a request would have
    published it (serving renders on demand), so clients keep getting what they got, a valid
    (possibly empty) index, instead of a 404 for as long as the channel stays frozen.
    """
    if channel.frozen:
        return False
    if channel.published_at is None:
        channel_publish(channel=channel)
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

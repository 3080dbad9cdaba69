"""The admin index's overview: mirrors by status, recent failures, runs in progress, storage
used, channel sizes and the latest audit events, each limited to what the user may see, in a
few aggregate queries (none per row)."""

from __future__ import annotations

from django.db.models import Count, Sum
from django.urls import reverse

from channels_app.models import FILE_BYTES, SERVED, Artifact, Channel, Package
from channels_app.permissions import filter_allowed as channels_allowed
from mirrors_app import live
from mirrors_app.admin.pages import for_admin
from mirrors_app.models import Mirror, SyncRun
from mirrors_app.permissions import filter_allowed as mirrors_allowed
from mirrors_app.permissions import may_some as may_some_mirrors
from psm.redaction import scrub

from .models import AuditEvent

FAILURES_SHOWN = 5
IN_PROGRESS_SHOWN = 20
CHANNELS_SHOWN = 20
EVENTS_SHOWN = 10
#: Who may see every channel (private ones included), so totals over all storage tell nothing
#: they may not know: Manage on both channel categories (channels_app.permissions).
SEES_EVERY_CHANNEL = ("channels_app.change_channel", "channels_app.change_subchannel")


def overview(user) -> dict:
    """What the admin index shows `user` besides the apps list."""
    shown: dict = {}
    if may_some_mirrors(user, "view") or may_some_mirrors(user, "change"):
        shown.update(_mirrors(user))
    channels = channels_allowed(user, ("view", "change"), Channel.objects.all())
    shown["channels"] = _channel_sizes(channels)
    if user.has_perms(SEES_EVERY_CHANNEL):
        shown["storage"] = Artifact.objects.aggregate(files=Count("pk"), bytes=Sum("size"))
    if user.has_perm("psm.view_auditevent"):
        shown["events"] = list(AuditEvent.objects.order_by("-created_at", "-id")[:EVENTS_SHOWN])
        shown["events_url"] = reverse("admin:psm_auditevent_changelist")
    return shown


def _mirrors(user) -> dict:
    mirrors = mirrors_allowed(user, ("view", "change"), Mirror.objects.all())
    counts = dict(mirrors.order_by().values_list("status").annotate(n=Count("pk")))
    # The All Mirrors list, filtered by status, only for those who may open it.
    listing = (
        reverse("admin:mirrors_app_mirror_changelist")
        if user.has_perm("mirrors_app.view_all_mirrors")
        else ""
    )
    by_status = [
        (label, counts.get(value, 0), f"{listing}?status__exact={value}" if listing else "")
        for value, label in Mirror.Status.choices
        if counts.get(value)
    ]
    failed = (
        mirrors_allowed(user, "view", SyncRun.objects.filter(state=SyncRun.State.FAILED))
        .select_related("mirror__channel__parent")
        .order_by("-finished_at", "-pk")[:FAILURES_SHOWN]
    )
    failures = [
        {
            "run": run,
            "reason": scrub(run.error).splitlines()[0] if run.error.strip() else "",
            "url": reverse("admin:mirrors_app_mirror_details", args=[run.mirror_id]),
        }
        for run in failed
    ]
    active = for_admin(mirrors.filter(status__in=Mirror.ACTIVE_STATUSES))
    progress_url = reverse("admin:mirrors_app_mirror_progress")
    in_progress = [
        {
            "mirror": mirror,
            "url": reverse("admin:mirrors_app_mirror_details", args=[mirror.pk]),
            "status": live.status_cell(mirror, progress_url),
        }
        for mirror in active.order_by("channel__name", "name")[:IN_PROGRESS_SHOWN]
    ]
    return {
        "mirrors_total": sum(counts.values()),
        "by_status": by_status,
        "failures": failures,
        "in_progress": in_progress,
    }


def _channel_sizes(channels) -> dict:
    """The biggest of `channels` by files served, with their size, in one grouped query."""
    sizes = (
        Package.objects.filter(SERVED, channel__in=channels.values("pk"))
        .order_by()
        .values("channel")
        .annotate(files=Count("pk"), bytes=Sum(FILE_BYTES))
    )
    by_channel = {row["channel"]: row for row in sizes}
    rows = [
        {
            "channel": channel,
            "url": reverse("admin:channels_app_channel_change", args=[channel.pk]),
            "files": by_channel.get(channel.pk, {}).get("files", 0),
            "bytes": by_channel.get(channel.pk, {}).get("bytes") or 0,
        }
        for channel in channels.select_related("parent")
    ]
    rows.sort(key=lambda row: (-row["files"], row["channel"].path))
    return {"rows": rows[:CHANNELS_SHOWN], "more": max(len(rows) - CHANNELS_SHOWN, 0)}

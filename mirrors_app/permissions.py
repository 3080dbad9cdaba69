"""Who may see and act on mirrors and runs, in the admin and the API.

A mirror's action needs its category's permission: Channel mirrors for a mirror of a top-level
channel, Subchannel mirrors for one of a subchannel. Grants never reach mirrors. A mirror or run
of a channel the user may not know (channels_app.permissions.may_know) does not exist for them,
whatever their mirror permissions.
"""

from __future__ import annotations

from django.db.models import Model, QuerySet

from channels_app.models import Channel
from channels_app.permissions import PermPair, known_channels, may_know, places_held
from psm.permissions import RowRules, register, signed_in

from .models import Mirror, SyncRun

MIRROR_PERMS: dict[str, PermPair] = {
    **{
        action: (f"mirrors_app.{action}_mirror", f"mirrors_app.{action}_subchannel_mirror")
        for action in ("view", "add", "change", "delete", "run", "stop", "restart")
    },
    "report": (
        "mirrors_app.download_dependency_report",
        "mirrors_app.download_subchannel_dependency_report",
    ),
}
# A run is seen by whoever may see its mirror (the SyncRun model permission still applies).
_RUN_PERMS: dict[str, PermPair] = {"view": MIRROR_PERMS["view"]}

# model -> (its permissions per action, the path from its rows to their channel)
_RULES: dict[type[Model], tuple[dict[str, PermPair], str]] = {
    Mirror: (MIRROR_PERMS, "channel"),
    SyncRun: (_RUN_PERMS, "mirror__channel"),
}


def _channel_of(row: Mirror | SyncRun) -> Channel:
    return row.channel if isinstance(row, Mirror) else row.mirror.channel


def perm_for(action: str, row: Mirror | SyncRun) -> str:
    """The Django permission `action` on this mirror or run needs, e.g.
    `mirrors_app.run_subchannel_mirror` for running a subchannel's mirror."""
    perms = MIRROR_PERMS if isinstance(row, Mirror) else _RUN_PERMS
    top, sub = perms[action]
    return sub if _channel_of(row).parent_id is not None else top


def may(user, action: str, row: Mirror | SyncRun) -> bool:
    """Whether `user` may do `action` (view, add, change, delete, run, stop, restart, report)
    on this mirror (or view this run); for `add`, pass the unsaved mirror with its channel."""
    if not signed_in(user):
        return False
    return user.has_perm(perm_for(action, row)) and may_know(user, _channel_of(row))


def may_some(user, action: str, *, subchannel: bool | None = None) -> bool:
    """Whether `user` may do `action` on some mirrors: of top-level channels
    (`subchannel=False`), of subchannels (`True`) or of either (`None`)."""
    places = places_held(user, [MIRROR_PERMS[action]])
    return bool(places) if subchannel is None else subchannel in places


def filter_allowed(user, actions: str | tuple[str, ...], queryset: QuerySet) -> QuerySet:
    """The mirrors (or runs) of `queryset` the user may do the action (or any of them) on."""
    perms, path = _RULES[queryset.model]
    return _in_channels_allowing(user, actions, queryset, perms, path)


def channels_allowing(user, action: str) -> QuerySet:
    """The channels in which `user` may do `action` on mirrors (e.g. add them)."""
    return _in_channels_allowing(user, action, Channel.objects.all(), MIRROR_PERMS, "")


def _in_channels_allowing(
    user, actions: str | tuple[str, ...], queryset: QuerySet, perms: dict, path: str
) -> QuerySet:
    """The rows of `queryset` whose channel (at `path`) the user may know and whose category
    (top-level channel or subchannel) gives them one of the actions' permissions."""
    actions = (actions,) if isinstance(actions, str) else actions
    places = places_held(user, [perms[action] for action in actions])
    if not places:
        return queryset.none()
    queryset = queryset.filter(known_channels(user, path))
    if len(places) == 2:
        return queryset
    parent = f"{path}__parent" if path else "parent"
    return queryset.filter(**{f"{parent}__isnull": True not in places})


register(
    Mirror,
    RowRules(perm_for=perm_for, may=may, may_some=may_some, filter_allowed=filter_allowed),
)

"""Who may see and change channel rows, in the admin and the API, and which channels exist for
a user at all. (Who may read a channel as a package client: channels_app.access.)

Each action has two permissions, one for top-level channels (category Channels) and one for
subchannels (category Subchannels); the row decides which applies. Channels also have grants
(ChannelGrant: group × channel × level): an action on a channel is allowed by its category
permission OR by a grant to one of the user's groups on the channel or its parent at the
action's level. A private channel is seen only through a grant, Manage on its category, or as
a superuser: category Read alone does not show it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Exists, OuterRef, Q, QuerySet

from psm.permissions import RowRules, register, signed_in
from psm.tokens import token_allows

from .models import Channel, ChannelGrant

# A permission per place: (in top-level channels, in subchannels).
PermPair = tuple[str, str]

# "grant" (edit a channel's grants) needs Manage on the channel's category; grants never give it.
GRANT = "grant"
# On a private channel, category permission to view means this action's (Manage).
PRIVATE_VIEW_ACTION = "change"

PERMS: dict[str, PermPair] = {
    **{
        action: (f"channels_app.{action}_channel", f"channels_app.{action}_subchannel")
        for action in ("view", "add", "change", "delete", "freeze")
    },
    GRANT: ("channels_app.change_channel", "channels_app.change_subchannel"),
}
# action -> the level a grant must give for it. Adding with a grant = a subchannel in a channel
# granted Write (spec: "creating a subchannel needs Write on the parent channel").
GRANT_LEVELS = {
    "view": "read",
    "add": "write",
    "change": "manage",
    "delete": "manage",
    "freeze": "manage",
}

_PRIVATE = Channel.Visibility.PRIVATE


def places_held(user, pairs: Iterable[PermPair]) -> set[bool]:
    """Where the user holds one of these permissions: False for top-level channels, True for
    subchannels (for any rows placed in channels: channels, mirrors, runs)."""
    if not signed_in(user):
        return set()
    return {
        subchannel
        for pair in pairs
        for subchannel, perm in zip((False, True), pair, strict=True)
        if user.has_perm(perm)
    }


def perm_for(action: str, channel: Channel) -> str:
    """The Django permission `action` on this channel needs, e.g. `channels_app.freeze_subchannel`
    for freezing a subchannel."""
    top, sub = PERMS[action]
    return sub if channel.parent_id is not None else top


def may(user, action: str, channel: Channel) -> bool:
    """Whether `user` may do `action` (view, add, change, delete, freeze, grant) on this
    channel; for `add`, pass the unsaved channel with its parent set."""
    if not signed_in(user):
        return False
    category_action = action
    if action == "view" and channel.visibility == _PRIVATE:
        category_action = PRIVATE_VIEW_ACTION
    if user.has_perm(perm_for(category_action, channel)):
        return True
    level = GRANT_LEVELS.get(action)
    return (
        bool(level)
        and token_allows(user, perm_for(action, channel))
        and _granted(user, channel, level)
    )


def may_some(user, action: str, *, subchannel: bool | None = None) -> bool:
    """Whether `user` may do `action` on some channels: top-level ones (`subchannel=False`),
    subchannels (`True`) or either (`None`)."""
    places = places_held(user, [PERMS[action]])
    if subchannel is None and places or subchannel in places:
        return True
    # Grants: on some channel (covering its subchannels); adding only ever makes subchannels.
    level = GRANT_LEVELS.get(action)
    if not level or (action == "add" and subchannel is False) or not signed_in(user):
        return False
    perms = PERMS[action]
    allowed = [perms[1]] if subchannel else [perms[0]] if subchannel is False else perms
    return any(token_allows(user, p) for p in allowed) and _grants_of(user, level).exists()


def filter_allowed(user, actions: str | tuple[str, ...], queryset: QuerySet) -> QuerySet:
    """The channels of `queryset` the user may do the action (or any of the actions) on."""
    actions = (actions,) if isinstance(actions, str) else actions
    return queryset.filter(_channel_rows(user, actions, ""))


def may_know(user, channel: Channel) -> bool:
    """Whether the channel exists as far as `user` is concerned: whether they may read it as
    package clients do (public: anyone; authenticated: signed-in users; private: `may` view).
    Everything about a channel one may not know (its mirrors, runs, reports, subchannels,
    grants, tokens naming it) answers exactly as if it did not exist."""
    if channel.visibility == Channel.Visibility.PUBLIC:
        return True
    if not signed_in(user):
        return False
    return channel.visibility == Channel.Visibility.AUTHENTICATED or may(user, "view", channel)


def known_channels(user, path: str = "") -> Q:
    """`may_know` as a filter on the rows whose channel is at `path` ("" for channels)."""
    here = f"{path}__" if path else ""
    if not signed_in(user):
        return Q(**{f"{here}visibility": Channel.Visibility.PUBLIC})
    private = Q(**{f"{here}visibility": _PRIVATE})
    return ~private | _channel_rows(user, ("view",), path)


def visible_channels(user, queryset: QuerySet) -> QuerySet:
    """The channels of `queryset` that exist for `user` (`may_know`): the one rule for every
    place that names or finds a channel by name, path or id (API fields, subchannel parents,
    admin choice lists), so a hidden channel and a missing one give the same answer."""
    return queryset.filter(known_channels(user))


def _grants_of(user, level: str) -> QuerySet:
    """The grants of `level` or more to the user's groups; none once the user is inactive
    (read from the database, so a deactivation counts even for a user object loaded before)."""
    return ChannelGrant.objects.filter(
        group__user=user, group__user__is_active=True, level__in=ChannelGrant.levels_from(level)
    )


def _granted(user, channel: Channel, level: str) -> bool:
    """Whether one of the user's groups holds `level` or more on the channel or its parent."""
    ids = channel.covering_ids
    return bool(ids) and _grants_of(user, level).filter(channel_id__in=ids).exists()


def _grants_query(user, level: str, path: str) -> Q:
    """Rows whose channel (at `path`, "" for channels) or its parent grants one of the user's
    groups `level` or more."""
    grants = _grants_of(user, level)
    here = f"{path}__" if path else ""
    return Q(Exists(grants.filter(channel_id=OuterRef(f"{here}pk")))) | Q(
        Exists(grants.filter(channel_id=OuterRef(f"{here}parent_id")))
    )


def _channel_rows(user, actions: tuple[str, ...], path: str) -> Q:
    """`may` as a filter on the rows whose channel is at `path`: category permissions (Manage
    for private channels to view), or grants at the actions' levels."""
    if not signed_in(user):
        return Q(pk__in=[])
    here = f"{path}__" if path else ""
    where = {sub: Q(**{f"{here}parent__isnull": not sub}) for sub in (False, True)}
    private = Q(**{f"{here}visibility": _PRIVATE})
    allowed = Q(pk__in=[])
    for action in actions:
        for sub, perm in zip((False, True), PERMS[action], strict=True):
            if action == "view":
                manage = PERMS[PRIVATE_VIEW_ACTION][sub]
                if user.has_perm(manage):
                    allowed |= where[sub]
                elif user.has_perm(perm):
                    allowed |= where[sub] & ~private
            elif user.has_perm(perm):
                allowed |= where[sub]
            level = GRANT_LEVELS.get(action)
            if level and token_allows(user, perm):
                allowed |= where[sub] & _grants_query(user, level, path)
    return allowed


register(
    Channel,
    RowRules(perm_for=perm_for, may=may, may_some=may_some, filter_allowed=filter_allowed),
)

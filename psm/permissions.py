"""Who may do what to a channel, a mirror or a run: the one place the admin, the API, tokens and
package clients ask.

Django permissions are per model, but PSM's categories are not: a subchannel is a Channel row
with a parent (category Subchannels) and a subchannel's mirror is a Mirror whose channel has a
parent (category Subchannel mirrors). So each action maps to two permissions, one for rows in
top-level channels and one for rows in subchannels, and the row decides which one applies.

Channels also have grants (channels_app.ChannelGrant: group × channel × level). On a channel
row, an action is allowed by its category permission OR by a grant to one of the user's groups
on the channel or its parent at the action's level. A private channel is seen only through a
grant, Manage on its category, or as a superuser: category Read alone does not show it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from django.contrib import messages
from django.db.models import Exists, Model, OuterRef, Q, QuerySet
from rest_framework.permissions import BasePermission, DjangoModelPermissions


@dataclass(frozen=True)
class Rule:
    # Path from a row to its channel ("" for a channel itself).
    channel_path: str
    # action -> (permission in top-level channels, permission in subchannels)
    perms: dict[str, tuple[str, str]]
    # action -> the level a channel grant must give for it; only rows of channels themselves
    # (a grant never reaches mirrors: they stay with the mirror categories).
    grant_levels: dict[str, str] = field(default_factory=dict)


_CHANNEL_ACTIONS = ("view", "add", "change", "delete", "freeze")
_MIRROR_ACTIONS = ("view", "add", "change", "delete", "run", "stop", "restart")
_MIRROR_PERMS = {
    action: (f"mirrors_app.{action}_mirror", f"mirrors_app.{action}_subchannel_mirror")
    for action in _MIRROR_ACTIONS
}

# "grant" (edit a channel's grants) needs Manage on the channel's category; grants never give it.
GRANT = "grant"
# On a private channel, category permission to view means this action's (Manage).
PRIVATE_VIEW_ACTION = "change"

RULES: dict[str, Rule] = {
    "channels_app.channel": Rule(
        "",
        {
            **{
                action: (f"channels_app.{action}_channel", f"channels_app.{action}_subchannel")
                for action in _CHANNEL_ACTIONS
            },
            GRANT: ("channels_app.change_channel", "channels_app.change_subchannel"),
        },
        # Adding with a grant = a subchannel in a channel granted Write (spec: "creating a
        # subchannel needs Write on the parent channel").
        grant_levels={
            "view": "read",
            "add": "write",
            "change": "manage",
            "delete": "manage",
            "freeze": "manage",
        },
    ),
    "mirrors_app.mirror": Rule(
        "channel",
        {
            **_MIRROR_PERMS,
            "report": (
                "mirrors_app.download_dependency_report",
                "mirrors_app.download_subchannel_dependency_report",
            ),
        },
    ),
    # A run is seen by whoever may see its mirror (the SyncRun model permission still applies).
    "mirrors_app.syncrun": Rule("mirror__channel", {"view": _MIRROR_PERMS["view"]}),
}


def _rule(model) -> Rule:
    return RULES[model._meta.label_lower]


def _channel_of(obj: Model):
    """The channel a row (a channel, mirror or run) belongs to: the row itself for a channel."""
    target = obj
    for name in filter(None, _rule(obj).channel_path.split("__")):
        target = getattr(target, name)
    return target


def in_subchannel(obj: Model) -> bool:
    """Whether the row (a channel, mirror or run, saved or not) belongs to a subchannel."""
    return _channel_of(obj).parent_id is not None


def perm_for(action: str, obj: Model) -> str:
    """The Django permission `action` on this row needs, e.g. `mirrors_app.run_subchannel_mirror`
    for running a subchannel's mirror."""
    top, sub = _rule(obj).perms[action]
    return sub if in_subchannel(obj) else top


def may(user, action: str, obj: Model) -> bool:
    """Whether `user` may do `action` (view, add, change, delete, freeze, grant, run, stop,
    restart, report) on this row; for `add`, pass the unsaved row with its channel or parent
    set."""
    if not signed_in(user):
        return False
    rule = _rule(obj)
    if not rule.grant_levels:
        return user.has_perm(perm_for(action, obj)) and may_know(user, _channel_of(obj))
    category_action = action
    if action == "view" and _is_private(obj):
        category_action = PRIVATE_VIEW_ACTION
    if user.has_perm(perm_for(category_action, obj)):
        return True
    level = rule.grant_levels.get(action)
    return bool(level) and _token_allows(user, perm_for(action, obj)) and _granted(user, obj, level)


def _is_private(channel) -> bool:
    from channels_app.models import Channel

    return channel.visibility == Channel.Visibility.PRIVATE


def may_know(user, channel) -> bool:
    """Whether the channel exists as far as `user` is concerned: whether they may read it as
    package clients do (public: anyone; authenticated: signed-in users; private: `may` view).
    Everything about a channel one may not know (its mirrors, runs, reports, subchannels,
    grants, tokens naming it) answers exactly as if it did not exist."""
    from channels_app.models import Channel

    if channel.visibility == Channel.Visibility.PUBLIC:
        return True
    if not signed_in(user):
        return False
    return channel.visibility == Channel.Visibility.AUTHENTICATED or may(user, "view", channel)


def known_channels(user, path: str = "") -> Q:
    """`may_know` as a filter on the rows whose channel is at `path` ("" for channels)."""
    from channels_app.models import Channel

    here = f"{path}__" if path else ""
    if not signed_in(user):
        return Q(**{f"{here}visibility": Channel.Visibility.PUBLIC})
    private = Q(**{f"{here}visibility": Channel.Visibility.PRIVATE})
    return ~private | _channel_rows(user, ("view",), RULES["channels_app.channel"], path)


def visible_channels(user, queryset: QuerySet) -> QuerySet:
    """The channels of `queryset` that exist for `user` (`may_know`): the one rule for every
    place that names or finds a channel by name, path or id (API fields, subchannel parents,
    admin choice lists), so a hidden channel and a missing one give the same answer."""
    return queryset.filter(known_channels(user))


def _token_allows(user, perm: str) -> bool:
    """A user acting through a scope token gets from grants only what the token's scopes allow."""
    token = getattr(user, "psm_token", None)
    if token is None:
        return True
    from .tokens import token_permissions

    return perm in token_permissions(token)


def _grants_of(user, level: str) -> QuerySet:
    """The grants of `level` or more to the user's groups; none once the user is inactive
    (read from the database, so a deactivation counts even for a user object loaded before)."""
    from channels_app.models import ChannelGrant

    return ChannelGrant.objects.filter(
        group__user=user, group__user__is_active=True, level__in=ChannelGrant.levels_from(level)
    )


def _granted(user, channel, level: str) -> bool:
    """Whether one of the user's groups holds `level` or more on the channel or its parent."""
    ids = channel.covering_ids
    return bool(ids) and _grants_of(user, level).filter(channel_id__in=ids).exists()


def grants_query(user, level: str, prefix: str = "") -> Q:
    """Rows whose channel (at `prefix`, "" for channels) or its parent grants one of the
    user's groups `level` or more."""
    grants = _grants_of(user, level)
    here = f"{prefix}__" if prefix else ""
    return Q(Exists(grants.filter(channel_id=OuterRef(f"{here}pk")))) | Q(
        Exists(grants.filter(channel_id=OuterRef(f"{here}parent_id")))
    )


def _granted_anywhere(user, level: str) -> bool:
    return _grants_of(user, level).exists()


def may_some(user, action: str, model, *, subchannel: bool | None = None) -> bool:
    """Whether `user` may do `action` on some rows of `model`: in top-level channels
    (`subchannel=False`), in subchannels (`True`) or in either (`None`)."""
    places = _places(user, (action,), model)
    if subchannel is None and places or subchannel in places:
        return True
    # Grants: on some channel (covering its subchannels); adding only ever makes subchannels.
    level = _rule(model).grant_levels.get(action)
    if not level or (action == "add" and subchannel is False) or not signed_in(user):
        return False
    perms = _rule(model).perms[action]
    allowed = [perms[1]] if subchannel else [perms[0]] if subchannel is False else perms
    return any(_token_allows(user, p) for p in allowed) and _granted_anywhere(user, level)


def signed_in(user) -> bool:
    """An active, signed-in user: the one test of every access path (inactive = no access)."""
    return bool(user and user.is_authenticated and user.is_active)


def _places(user, actions: tuple[str, ...], model) -> set[bool]:
    """Where the user may do any of `actions` on `model` rows: False for top-level channels,
    True for subchannels."""
    if not signed_in(user):
        return set()
    rule = _rule(model)
    return {
        subchannel
        for action in actions
        for subchannel, perm in zip((False, True), rule.perms[action], strict=True)
        if user.has_perm(perm)
    }


def filter_allowed(
    user, actions: str | tuple[str, ...], queryset: QuerySet, *, model=None, channel_path=None
) -> QuerySet:
    """The rows of `queryset` the user may do the action (or any of the actions) on.

    With `model` and `channel_path`, the rule of another model applies through that path, e.g.
    channels (path "") in which the user may add mirrors (model Mirror)."""
    actions = (actions,) if isinstance(actions, str) else actions
    model = model or queryset.model
    rule = _rule(model)
    path = rule.channel_path if channel_path is None else channel_path
    if rule.grant_levels:
        return queryset.filter(_channel_rows(user, actions, rule, path))
    places = _places(user, actions, model)
    if not places:
        return queryset.none()
    queryset = queryset.filter(known_channels(user, path))
    if len(places) == 2:
        return queryset
    parent = f"{path}__parent" if path else "parent"
    return queryset.filter(**{f"{parent}__isnull": True not in places})


def _channel_rows(user, actions: tuple[str, ...], rule: Rule, path: str) -> Q:
    """`may` for channel rows, as a filter: category permissions (Manage for private channels
    to view), or grants at the actions' levels."""
    from channels_app.models import Channel

    if not signed_in(user):
        return Q(pk__in=[])
    here = f"{path}__" if path else ""
    where = {sub: Q(**{f"{here}parent__isnull": not sub}) for sub in (False, True)}
    private = Q(**{f"{here}visibility": Channel.Visibility.PRIVATE})
    allowed = Q(pk__in=[])
    for action in actions:
        for sub, perm in zip((False, True), rule.perms[action], strict=True):
            if action == "view":
                manage = rule.perms[PRIVATE_VIEW_ACTION][sub]
                if user.has_perm(manage):
                    allowed |= where[sub]
                elif user.has_perm(perm):
                    allowed |= where[sub] & ~private
            elif user.has_perm(perm):
                allowed |= where[sub]
            level = rule.grant_levels.get(action)
            if level and _token_allows(user, perm):
                allowed |= where[sub] & grants_query(user, level, path)
    return allowed


# --- REST API ---------------------------------------------------------------------------------


class ModelPermissions(DjangoModelPermissions):
    """DjangoModelPermissions that also require the `view` permission to read."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }


METHOD_ACTIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


class RowPermissions(BasePermission):
    """The permission of the request's action for the rows it touches (see `may`).

    Used through `RowPermissionsMixin`. Creating is checked again in the view, on the new row
    (its channel is only known from the body)."""

    actions: tuple[str, ...] = ()  # empty: the HTTP method's

    def actions_for(self, request) -> tuple[str, ...]:
        return self.actions or (METHOD_ACTIONS.get(request.method, "change"),)

    def has_permission(self, request, view) -> bool:
        return all(
            may_some(
                request.user, action, view.permission_model, subchannel=view.permission_subchannel
            )
            for action in self.actions_for(request)
        )

    def has_object_permission(self, request, view, obj) -> bool:
        return all(may(request.user, action, obj) for action in self.actions_for(request))


class RowPermissionsMixin:
    """For viewsets of channels, mirrors or runs: `RowPermissions`, and `filter_rows` for
    `get_queryset`, so rows the user may neither see nor act on are 404s and not listed."""

    permission_classes = [RowPermissions]
    permission_model: type[Model]
    # Narrow the rows to top-level channels (False) or subchannels (True) and theirs.
    permission_subchannel: bool | None = None

    def filter_rows(self, queryset: QuerySet) -> QuerySet:
        actions = {"view"}.union(
            *(
                perm.actions_for(self.request)
                for perm in self.get_permissions()
                if isinstance(perm, RowPermissions)
            )
        )
        return filter_allowed(self.request.user, tuple(sorted(actions)), queryset)


def require(*actions: str) -> type[RowPermissions]:
    """Permission class for a command on one row that needs all of `actions` (`run`, …)."""
    return type(f"Require_{'_'.join(actions)}", (RowPermissions,), {"actions": actions})


def channels_allowing(user, action: str, model) -> QuerySet:
    """The channels in which `user` may do `action` on rows of `model` (e.g. add mirrors)."""
    from channels_app.models import Channel

    return filter_allowed(user, action, Channel.objects.all(), model=model, channel_path="")


# --- Admin ------------------------------------------------------------------------------------


class RowPermissionsAdmin:
    """ModelAdmin mixin: the model's permissions checked per row with `may`.

    Lists and pages only hold rows the user may see (view or change, as in Django); a custom
    action `x` is allowed by `has_x_permission`; bulk actions skip the rows not allowed; the
    add and change forms check the row as it will be saved, `permission_field` (the field that
    places it in a channel or subchannel) included."""

    permission_field: str = ""

    def get_queryset(self, request):
        return filter_allowed(request.user, ("view", "change"), super().get_queryset(request))

    def may(self, request, action: str, obj=None) -> bool:
        """`action` on this row, or, without a row, on some rows."""
        if obj is None:
            return may_some(request.user, action, self.model)
        return may(request.user, action, obj)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.may(request, "view", obj) or self.may(request, "change", obj)

    def has_add_permission(self, request) -> bool:
        return self.may(request, "add")

    def has_change_permission(self, request, obj=None) -> bool:
        return self.may(request, "change", obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.may(request, "delete", obj)

    def permitted(self, request, action: str, queryset: QuerySet) -> QuerySet:
        """The selected rows `action` is allowed on; says how many were skipped."""
        allowed = filter_allowed(request.user, action, queryset)
        skipped = queryset.count() - allowed.count()
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected {self.model._meta.verbose_name_plural} skipped: "
                f"you may not {action} them.",
                messages.WARNING,
            )
        return allowed

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        field, user = self.permission_field, request.user

        class RowPermissionForm(form):
            def clean(self):
                data = super().clean()
                if not field or field in self.errors or field not in self.fields:
                    return data
                row = copy.copy(self.instance)
                setattr(row, field, data.get(field))
                action = "change" if row.pk else "add"
                if not may(user, action, row):
                    perm = perm_for(action, row)
                    self.add_error(field, f"You do not have the permission {perm} for this.")
                return data

        return RowPermissionForm

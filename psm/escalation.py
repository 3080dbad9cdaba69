"""Who may give what: nobody but a superuser gives anyone, itself included, more than it holds.

The one rule behind the user and group admins (psm/user_admin.py). Roles: Manage gives
`auth.change_user`; with it alone, Django's stock user admin would let a user tick "Superuser
status" on itself, set a superuser's password or take any group. Here, for a non-superuser:

- a permission may be given only if the actor holds it;
- a group may be given only if the actor is a member of it, or holds all its permissions and
  everything its channel grants can give (a grant gives at most Manage on a channel and its
  subchannels: Manage on both channel categories covers any grant); a team group with grants
  gives access to private channels, so "holds all its permissions" alone is not enough;
- an account may be changed (its groups, permissions, active flag, password) or deleted only if
  it is not a superuser, not the actor itself, and holds nothing the actor could not give it;
- superuser and staff status are never changed by a non-superuser;
- a single sign-on account gets no password from a non-superuser: a local password would be a
  way in that bypasses the provider, where roles are re-read at each login.

Superusers keep full power. Inactive users hold nothing (they never reach the admin either).
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db.models import Exists, OuterRef, Q, QuerySet

from .roles import CATEGORIES


def _is_superuser(user) -> bool:
    return bool(user.is_active and user.is_superuser)


def _given_ids(user) -> set[int]:
    """Ids of the permissions given to the user, directly or through its groups."""
    direct = Permission.objects.filter(user=user).values_list("pk", flat=True)
    through_groups = Permission.objects.filter(group__user=user).values_list("pk", flat=True)
    return set(direct) | set(through_groups)


def held_permissions(user) -> QuerySet[Permission]:
    """The permissions the user holds, directly or through its groups (nothing if inactive)."""
    if not user.is_active:
        return Permission.objects.none()
    if user.is_superuser:
        return Permission.objects.all()
    return Permission.objects.filter(pk__in=_given_ids(user))


def givable_permissions(actor) -> QuerySet[Permission]:
    """The permissions the actor may give: those it holds."""
    return held_permissions(actor).select_related("content_type")


def _covers_any_grant(actor) -> bool:
    """Manage on channels and on subchannels: what the highest channel grant can give."""
    perms = CATEGORIES["channel"].perms("manage") | CATEGORIES["subchannel"].perms("manage")
    return actor.has_perms(perms)


def givable_groups(actor) -> QuerySet[Group]:
    """The groups the actor may give (to anyone, or change): see the module docstring."""
    if not actor.is_active:
        return Group.objects.none()
    if actor.is_superuser:
        return Group.objects.all()
    not_held = Group.permissions.through.objects.filter(group=OuterRef("pk")).exclude(
        permission_id__in=_given_ids(actor)
    )
    holds_all = ~Q(Exists(not_held))
    if not _covers_any_grant(actor):
        # `channel_grants`: the groups' reverse relation to channels_app.ChannelGrant.
        with_grants = Group.objects.filter(pk=OuterRef("pk"), channel_grants__isnull=False)
        holds_all &= ~Q(Exists(with_grants))
    member = Q(Exists(Group.objects.filter(pk=OuterRef("pk"), user=actor)))
    return Group.objects.filter(member | holds_all)


def may_manage_user(actor, target) -> bool:
    """Whether the actor may change `target`'s account (groups, permissions, active flag,
    password) or delete it: anyone for a superuser; otherwise not a superuser, not itself, and
    only someone holding nothing the actor could not give."""
    if _is_superuser(actor):
        return True
    if not actor.is_active or target.is_superuser or target.pk == actor.pk:
        return False
    if _given_ids(target) - _given_ids(actor):
        return False
    givable = set(givable_groups(actor).values_list("pk", flat=True))
    return set(target.groups.values_list("pk", flat=True)) <= givable


def may_set_password(actor, target) -> bool:
    """Whether the actor may set `target`'s password (see `may_manage_user`); a single
    sign-on account's only by a superuser."""
    if _is_superuser(actor):
        return True
    from .models import OidcIdentity

    return may_manage_user(actor, target) and not OidcIdentity.objects.filter(user=target).exists()


def may_change_group(actor, group) -> bool:
    """Whether the actor may change or delete the group: one it may give, and, for a
    non-superuser, not one of the category groups psm.roles defines."""
    from .roles import group_names

    if _is_superuser(actor):
        return True
    if group.name in group_names():
        return False
    return givable_groups(actor).filter(pk=group.pk).exists()

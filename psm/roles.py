"""PSM's permission categories and levels, as Django groups, and the roles that grant them.

Each category (Channels, Channel mirrors, Policy engine, …) has three levels: Read, Write and
Manage, each including the one below. Every (category, level) pair is a Django group holding the
matching model permissions, so the admin and the API check exactly the same thing. Single
sign-on roles (or groups) map onto these groups; see `grants_for_roles`. They may also map onto
*team* groups (`"group:<name>"` in PSM_OIDC_ROLE_MAP): plain Django groups that channels grant
access to (channels_app.ChannelGrant), kept in sync at every login like the category groups.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

logger = logging.getLogger(__name__)

LEVELS = ("read", "write", "manage")
# Action words of the product's scopes, as the level they need (spec: `channel:edit` = Manage).
ACTION_LEVELS = {
    "view": "read",
    "download": "read",
    "view-artifacts": "read",
    "create": "write",
    "run": "write",
    "edit": "manage",
    "delete": "manage",
    "history": "manage",
}
SUPERUSER = "superuser"
TEAM_PREFIX = "group:"  # PSM_OIDC_ROLE_MAP entry naming a team group, e.g. "group:team-a"


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    # Permissions added at each level; a level also holds those of the levels below it.
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    manage: tuple[str, ...] = ()

    def perms(self, level: str) -> set[str]:
        upto = LEVELS[: LEVELS.index(level) + 1]
        return {perm for name in upto for perm in getattr(self, name)}

    def group_name(self, level: str) -> str:
        return f"{self.label}: {level.capitalize()}"


# Channels and subchannels (Channel rows with a parent) have their own permissions, as have
# their mirrors; channels_app/permissions.py and mirrors_app/permissions.py pick the one a
# row needs.
_CHANNEL = {
    "read": ("channels_app.view_channel",),
    "write": ("channels_app.add_channel",),
    "manage": (
        "channels_app.change_channel",
        "channels_app.delete_channel",
        "channels_app.freeze_channel",
    ),
}
_SUBCHANNEL = {
    "read": ("channels_app.view_subchannel",),
    "write": ("channels_app.add_subchannel",),
    "manage": (
        "channels_app.change_subchannel",
        "channels_app.delete_subchannel",
        "channels_app.freeze_subchannel",
    ),
}
# Creating and editing mirrors needs Write; stopping, restarting, deleting, the All Mirrors
# view and the dependency report need Manage. The All Mirrors view is one page for both
# mirror categories: it lists the mirrors the user may see.
_MIRROR = {
    "read": ("mirrors_app.view_mirror", "mirrors_app.view_syncrun"),
    "write": ("mirrors_app.add_mirror", "mirrors_app.change_mirror", "mirrors_app.run_mirror"),
    "manage": (
        "mirrors_app.delete_mirror",
        "mirrors_app.stop_mirror",
        "mirrors_app.restart_mirror",
        "mirrors_app.view_all_mirrors",
        "mirrors_app.download_dependency_report",
    ),
}
_SUBCHANNEL_MIRROR = {
    "read": ("mirrors_app.view_subchannel_mirror", "mirrors_app.view_syncrun"),
    "write": (
        "mirrors_app.add_subchannel_mirror",
        "mirrors_app.change_subchannel_mirror",
        "mirrors_app.run_subchannel_mirror",
    ),
    "manage": (
        "mirrors_app.delete_subchannel_mirror",
        "mirrors_app.stop_subchannel_mirror",
        "mirrors_app.restart_subchannel_mirror",
        "mirrors_app.view_all_mirrors",
        "mirrors_app.download_subchannel_dependency_report",
    ),
}

CATEGORIES: dict[str, Category] = {
    c.key: c
    for c in [
        Category("channel", "Channels", **_CHANNEL),
        Category("subchannel", "Subchannels", **_SUBCHANNEL),
        Category("channel.mirror", "Channel mirrors", **_MIRROR),
        Category("subchannel.mirror", "Subchannel mirrors", **_SUBCHANNEL_MIRROR),
        Category(
            "artifact",
            "Artifacts",
            read=("channels_app.view_package",),
            manage=("channels_app.delete_package",),
        ),
        # Advisories and the conda → PyPI name mapping that applies them: loaded, never edited.
        Category(
            "cve",
            "CVE",
            read=("policies_app.view_vulnerability", "policies_app.view_namemapping"),
        ),
        # Policies and their waivers are created, changed and deleted with Manage only.
        Category(
            "policy",
            "Policy engine",
            read=("policies_app.view_policy", "policies_app.view_waiver"),
            manage=(
                "policies_app.add_policy",
                "policies_app.change_policy",
                "policies_app.delete_policy",
                "policies_app.add_waiver",
                "policies_app.change_waiver",
                "policies_app.delete_waiver",
            ),
        ),
        Category("audit", "Audit logs", read=("psm.view_auditevent",)),
        Category(
            "roles",
            "Roles",
            read=("auth.view_user", "auth.view_group"),
            manage=("auth.change_user",),
        ),
    ]
}


def ensure_groups() -> None:
    """Create or correct the group of every category and level (idempotent)."""
    from django.contrib.auth.models import Group, Permission

    wanted = {
        cat.group_name(level): cat.perms(level) for cat in CATEGORIES.values() for level in LEVELS
    }
    every = {perm for perms in wanted.values() for perm in perms}
    by_name = {}
    for perm in Permission.objects.filter(
        content_type__app_label__in={p.split(".")[0] for p in every}
    ).select_related("content_type"):
        by_name[f"{perm.content_type.app_label}.{perm.codename}"] = perm
    missing = sorted(every - by_name.keys())
    if missing:
        raise ImproperlyConfigured(f"Permissions named in psm.roles do not exist: {missing}")
    with transaction.atomic():
        for name, perms in wanted.items():
            group, _ = Group.objects.get_or_create(name=name)
            group.permissions.set([by_name[p] for p in perms])
        # Team groups named in the map exist before anyone logs in, so channels can grant them.
        for name in team_names():
            Group.objects.get_or_create(name=name)


def ensure_groups_after_migrate(sender, **kwargs) -> None:
    ensure_groups()


def group_names() -> set[str]:
    """Names of every group this module manages."""
    return {cat.group_name(level) for cat in CATEGORIES.values() for level in LEVELS}


def parse_grant(grant: str) -> list[tuple[str, str]] | str:
    """`category:level` (level may be a product action word; category may be `*`) as pairs,
    or SUPERUSER. Raise ValueError naming what is wrong."""
    if grant == SUPERUSER:
        return SUPERUSER
    category, sep, level = grant.rpartition(":")
    level = ACTION_LEVELS.get(level, level)
    if not sep or level not in LEVELS:
        raise ValueError(f"{grant!r}: use 'category:read|write|manage' or {SUPERUSER!r}")
    if category == "*":
        return [(key, level) for key in CATEGORIES]
    if category not in CATEGORIES:
        known = ", ".join(CATEGORIES)
        raise ValueError(f"{grant!r}: unknown category {category!r}; known: {known}")
    return [(category, level)]


def parse_map_entry(entry: str) -> list[tuple[str, str]] | str:
    """A PSM_OIDC_ROLE_MAP entry: what `parse_grant` accepts, or `group:<name>` (returned as
    the name prefixed with TEAM_PREFIX). Raise ValueError naming what is wrong."""
    if entry.startswith(TEAM_PREFIX):
        name = entry[len(TEAM_PREFIX) :].strip()
        if not name or len(name) > 150:
            raise ValueError(f"{entry!r}: give a group name of 1 to 150 characters")
        if name in group_names():
            raise ValueError(f"{entry!r}: that is a category group; use 'category:level'")
        return TEAM_PREFIX + name
    return parse_grant(entry)


def team_names(roles: Iterable[str] | None = None) -> set[str]:
    """Team groups PSM_OIDC_ROLE_MAP gives these roles, or (None) every team group it names."""
    mapping = role_map()
    keys = mapping if roles is None else [r for r in roles if r in mapping]
    return {
        entry[len(TEAM_PREFIX) :].strip()
        for key in keys
        for entry in mapping[key]
        if entry.startswith(TEAM_PREFIX)
    }


def role_map() -> dict[str, list[str]]:
    """PSM_OIDC_ROLE_MAP: {"role or group": ["category:level", ...] or ["superuser"]}."""
    return getattr(settings, "PSM_OIDC_ROLE_MAP", None) or {}


def grants_for_roles(roles: Iterable[str]) -> tuple[dict[str, str], bool]:
    """The highest level per category, and whether superuser, that these roles grant.

    A role grants through the explicit map, or by the naming convention
    `<prefix><category>:<level>` (prefix `psm:` by default), e.g. `psm:channel.mirror:manage`;
    `<prefix>admin` makes a superuser. Unknown roles are ignored (Keycloak has many).
    """
    prefix = getattr(settings, "PSM_OIDC_ROLE_PREFIX", "psm:")
    mapping = role_map()
    levels: dict[str, str] = {}
    superuser = False
    for role in roles:
        entries = list(mapping.get(role, []))
        if prefix and role.startswith(prefix):
            rest = role[len(prefix) :]
            entries.append(SUPERUSER if rest == "admin" else rest)
        for entry in entries:
            if entry.startswith(TEAM_PREFIX):
                continue  # team groups: see team_names
            try:
                parsed = parse_grant(entry)
            except ValueError as exc:
                if role in mapping:
                    logger.warning("PSM_OIDC_ROLE_MAP: %s", exc)
                continue  # a convention-looking role that is not one of ours
            if parsed == SUPERUSER:
                superuser = True
                continue
            for category, level in parsed:
                if category not in levels or LEVELS.index(level) > LEVELS.index(levels[category]):
                    levels[category] = level
    return levels, superuser


@transaction.atomic
def user_sync_roles(*, user, roles: Iterable[str]) -> None:
    """Give the user exactly the category and team groups its roles grant now (removing the
    others; groups PSM_OIDC_ROLE_MAP does not name are left alone), superuser status from the
    admin role, and staff status (the admin) when it has any group."""
    from django.contrib.auth.models import Group

    roles = list(roles)
    levels, superuser = grants_for_roles(roles)
    teams = team_names(roles)
    wanted = {CATEGORIES[c].group_name(level) for c, level in levels.items()} | teams
    managed = group_names() | team_names()
    current = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
    if current - wanted:
        user.groups.remove(*Group.objects.filter(name__in=current - wanted))
    if wanted - current:
        missing = wanted - set(Group.objects.filter(name__in=wanted).values_list("name", flat=True))
        if missing:
            ensure_groups()  # creates the map's team groups too
        user.groups.add(*Group.objects.filter(name__in=wanted - current))
    staff = superuser or bool(wanted) or user.groups.exclude(name__in=managed).exists()
    if (user.is_superuser, user.is_staff) != (superuser, staff):
        user.is_superuser, user.is_staff = superuser, staff
        user.save(update_fields=["is_superuser", "is_staff"])
    # Django caches permissions on the user object; drop them after a change.
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache, None)

"""Permission categories × levels as Django groups, and the roles that grant them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from psm.roles import CATEGORIES, LEVELS, grants_for_roles, parse_grant, user_sync_roles
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _perms(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in group.permissions.select_related("content_type")
    }


def test_every_category_and_level_is_a_group_after_migrate():
    names = set(Group.objects.values_list("name", flat=True))

    for category in CATEGORIES.values():
        for level in LEVELS:
            assert category.group_name(level) in names


def test_levels_include_the_levels_below():
    read, write, manage = (_perms(f"Channel mirrors: {lvl}") for lvl in ("Read", "Write", "Manage"))

    assert read < write < manage
    assert {
        "mirrors_app.add_mirror",
        "mirrors_app.change_mirror",
        "mirrors_app.run_mirror",
    } <= write
    assert "mirrors_app.stop_mirror" not in write


def test_the_seed_rules_hold():
    # Mirroring needs Write or Manage on the mirror categories.
    for category, perm in [
        ("Channel mirrors", "mirrors_app.add_mirror"),
        ("Subchannel mirrors", "mirrors_app.add_subchannel_mirror"),
    ]:
        assert perm not in _perms(f"{category}: Read")
        assert perm in _perms(f"{category}: Write")
    # The All Mirrors view needs Manage (on either mirror category; it lists what one may see).
    for category in ("Channel mirrors", "Subchannel mirrors"):
        assert "mirrors_app.view_all_mirrors" not in _perms(f"{category}: Write")
        assert "mirrors_app.view_all_mirrors" in _perms(f"{category}: Manage")
    # Policies need Manage on the policy engine.
    assert "policies_app.change_policy" not in _perms("Policy engine: Write")
    assert {"policies_app.add_policy", "policies_app.delete_policy"} <= _perms(
        "Policy engine: Manage"
    )
    # Freezing is managing a channel.
    assert "channels_app.freeze_channel" not in _perms("Channels: Write")
    assert "channels_app.freeze_channel" in _perms("Channels: Manage")
    assert "channels_app.freeze_subchannel" in _perms("Subchannels: Manage")


@pytest.mark.parametrize(
    ("channel_category", "subchannel_category"),
    [("Channels", "Subchannels"), ("Channel mirrors", "Subchannel mirrors")],
)
def test_subchannel_categories_grant_nothing_of_the_channel_categories(
    channel_category, subchannel_category
):
    # Runs are one model: both mirror categories may read them (rows are filtered by mirror).
    shared = {"mirrors_app.view_syncrun", "mirrors_app.view_all_mirrors"}
    for level in ("Read", "Write", "Manage"):
        channel = _perms(f"{channel_category}: {level}")
        subchannel = _perms(f"{subchannel_category}: {level}")
        assert channel & subchannel <= shared
        assert len(channel) == len(subchannel)


@pytest.mark.parametrize(
    "roles, levels, superuser",
    [
        (["psm:channel:read"], {"channel": "read"}, False),
        (["psm:channel:read", "psm:channel:manage"], {"channel": "manage"}, False),
        (["psm:channel.mirror:edit"], {"channel.mirror": "manage"}, False),
        (["psm:admin"], {}, True),
        (["offline_access", "psm:nonsense", "psm:channel:owner"], {}, False),
        (["ops"], {"channel": "write", "policy": "manage"}, False),
        (["root"], {}, True),
    ],
)
def test_roles_grant_by_convention_and_by_the_map(settings, roles, levels, superuser):
    settings.PSM_OIDC_ROLE_MAP = {"ops": ["channel:write", "policy:manage"], "root": ["superuser"]}

    assert grants_for_roles(roles) == (levels, superuser)


def test_the_convention_prefix_is_configurable(settings):
    settings.PSM_OIDC_ROLE_PREFIX = "repo-"

    assert grants_for_roles(["repo-cve:read", "psm:channel:read"]) == ({"cve": "read"}, False)


def test_star_grants_every_category():
    assert parse_grant("*:read") == [(key, "read") for key in CATEGORIES]
    with pytest.raises(ValueError, match="unknown category"):
        parse_grant("mirrors:read")


def test_sync_keeps_groups_given_by_hand_and_replaces_the_managed_ones():
    user = UserFactory(is_staff=False)
    manual = Group.objects.create(name="auditors (local)")
    user.groups.add(manual, Group.objects.get(name="Channels: Manage"))

    user_sync_roles(user=user, roles=["psm:cve:read"])

    assert set(user.groups.values_list("name", flat=True)) == {"auditors (local)", "CVE: Read"}
    assert user.is_staff


# --- Team groups (channel grants) -------------------------------------------------------------

TEAM_MAP = {"/team-a": ["group:team-a"], "ops": ["channel:write", "group:ops team"]}


def test_the_map_puts_users_in_team_groups_and_takes_them_out_again(settings):
    settings.PSM_OIDC_ROLE_MAP = TEAM_MAP
    user = UserFactory(is_staff=False)
    by_hand = Group.objects.create(name="release managers")
    user.groups.add(by_hand)

    user_sync_roles(user=user, roles=["/team-a", "team-a", "ops"])
    assert set(user.groups.values_list("name", flat=True)) == {
        "team-a",
        "ops team",
        "Channels: Write",
        "release managers",
    }
    assert user.is_staff

    user_sync_roles(user=user, roles=["ops"])
    assert set(user.groups.values_list("name", flat=True)) == {
        "ops team",
        "Channels: Write",
        "release managers",  # not named by the map: an administrator's, kept
    }


def test_team_groups_of_the_map_exist_after_migrate(settings):
    from psm.roles import ensure_groups

    settings.PSM_OIDC_ROLE_MAP = TEAM_MAP
    ensure_groups()

    assert Group.objects.filter(name__in=["team-a", "ops team"]).count() == 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [("group:", "1 to 150"), ("group:Channels: Read", "category group"), ("team-a", "use")],
)
def test_bad_map_entries_are_refused(entry, message):
    from psm.roles import parse_map_entry

    with pytest.raises(ValueError, match=message):
        parse_map_entry(entry)
    assert parse_map_entry("group: team-a ") == "group:team-a"

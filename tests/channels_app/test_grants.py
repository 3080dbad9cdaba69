"""Channel grants: a group's Read, Write or Manage on one channel and its subchannels, so a
private channel is readable by its team only (channels_app/permissions.py decides; admin, API,
clients)."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from channels_app.models import Channel, ChannelGrant
from channels_app.permissions import filter_allowed, may
from mirrors_app import permissions as mirror_rules
from mirrors_app.models import Mirror
from psm.models import AuditEvent
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory, UserFactory, grant

pytestmark = pytest.mark.django_db

INDEX = "noarch/repodata.json"
PRIVATE = Channel.Visibility.PRIVATE
CHANGELIST = reverse("admin:channels_app_channel_changelist")


def member_of(*groups: str, username: str):
    user = UserFactory(username=username)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


@pytest.fixture
def secret():
    return ChannelFactory(name="secret", visibility=PRIVATE)


@pytest.fixture
def inner(secret):
    return ChannelFactory(name="inner", parent=secret, visibility=PRIVATE)


@pytest.fixture
def member(secret):
    user = UserFactory(username="member")
    grant(secret, user, group="team-a")
    return user


@pytest.fixture
def outsider():
    """Read on channels and subchannels, in no granted group."""
    return member_of("Channels: Read", "Subchannels: Read", username="outsider")


# --- The rule ---------------------------------------------------------------------------------


def test_a_member_of_a_granted_group_reads_the_private_channel(client, secret, member):
    client.force_login(member)

    assert client.get(f"/api/repo/secret/{INDEX}").status_code == 200


def test_read_on_channels_without_a_grant_is_a_404_like_a_missing_channel(client, secret, outsider):
    client.force_login(outsider)

    hidden = client.get(f"/api/repo/secret/{INDEX}")
    missing = client.get(f"/api/repo/nothing-here/{INDEX}")

    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content


def test_a_grant_covers_the_subchannels_but_not_the_parent(client, secret, inner, member):
    other = UserFactory(username="sub-only")
    grant(inner, other, group="team-b")

    client.force_login(member)
    assert client.get(f"/api/repo/secret/inner/{INDEX}").status_code == 200
    client.force_login(other)
    assert client.get(f"/api/repo/secret/inner/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/secret/{INDEX}").status_code == 404


def test_a_non_members_token_is_refused_even_when_it_names_the_channel(
    client, secret, member, outsider
):
    _, theirs = token_create(user=outsider, name="x", resources=[(secret, "read")])
    _, ours = token_create(user=member, name="y", resources=[(secret, "read")])

    assert client.get(f"/api/repo/t/{theirs}/secret/{INDEX}").status_code == 404
    assert client.get(f"/api/repo/t/{ours}/secret/{INDEX}").status_code == 200


def test_leaving_the_group_closes_the_channel_and_its_tokens(client, secret, member):
    _, token = token_create(user=member, name="y", resources=[(secret, "read")])
    member.groups.clear()

    assert client.get(f"/api/repo/t/{token}/secret/{INDEX}").status_code == 404


def test_a_scope_token_narrows_what_grants_give(client, secret, member):
    _, reads = token_create(user=member, name="a", kind="scope", scopes=["channel:read"])
    _, other = token_create(user=member, name="b", kind="scope", scopes=["policy:read"])

    assert client.get(f"/api/repo/t/{reads}/secret/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/t/{other}/secret/{INDEX}").status_code == 404


def test_levels_give_the_matching_actions_on_the_channel(secret, inner):
    reader, writer, manager = (UserFactory(username=n) for n in ("r", "w", "m"))
    grant(secret, reader, group="readers", level="read")
    grant(secret, writer, group="writers", level="write")
    grant(secret, manager, group="managers", level="manage")
    new_sub = Channel(name="new", kind="conda", parent=secret)

    assert may(reader, "view", secret) and not may(reader, "add", new_sub)
    assert may(writer, "add", new_sub) and not may(writer, "change", secret)
    assert all(may(manager, a, c) for a in ("change", "delete", "freeze") for c in (secret, inner))
    # Editing grants, and top-level channels, stay with the category.
    assert not may(manager, "grant", secret)
    assert not may(manager, "add", Channel(name="top", kind="conda"))


def test_grants_do_not_reach_mirrors(secret, member):
    grant(secret, member, group="team-a", level="manage")
    mirror = MirrorFactory(channel=secret)

    assert not mirror_rules.may(member, "view", mirror)
    assert not mirror_rules.filter_allowed(member, "view", Mirror.objects.all()).exists()


def test_manage_on_the_category_sees_private_channels_read_does_not(secret, inner):
    read = member_of("Channels: Read", "Subchannels: Read", username="read")
    manage = member_of("Channels: Manage", username="manage")
    public = ChannelFactory(name="open")

    assert not may(read, "view", secret) and may(read, "view", public)
    assert may(manage, "view", secret) and not may(manage, "view", inner)


def test_the_filter_agrees_with_may_on_every_row(secret, inner):
    """filter_allowed is may() as SQL: check them against each other on a small world."""
    public = ChannelFactory(name="open")
    public_sub = ChannelFactory(name="pub-sub", parent=public)
    private_sub = ChannelFactory(name="priv-sub", parent=public, visibility=PRIVATE)
    authenticated = ChannelFactory(name="auth", visibility=Channel.Visibility.AUTHENTICATED)
    rows = [secret, inner, public, public_sub, private_sub, authenticated]
    users = [
        member_of("Channels: Read", username="c-read"),
        member_of("Channels: Manage", "Subchannels: Read", username="c-manage"),
        member_of("Subchannels: Manage", username="s-manage"),
        UserFactory(username="nobody"),
        UserFactory(username="root", is_superuser=True),
    ]
    grant(secret, users[0], group="g-read", level="read")
    grant(private_sub, users[3], group="g-manage", level="manage")
    grant(public, users[2], group="g-write", level="write")

    for user, action in itertools.product(users, ("view", "change", "delete", "freeze", "grant")):
        allowed = set(filter_allowed(user, action, Channel.objects.all()))
        expected = {row for row in rows if may(user, action, row)}
        assert allowed == expected, (user.username, action)


# --- Admin ------------------------------------------------------------------------------------


def test_admin_lists_private_channels_only_to_their_groups_and_managers(
    client, secret, member, outsider
):
    ChannelFactory(name="open")

    client.force_login(outsider)
    page = client.get(CHANGELIST)
    assert page.status_code == 200 and "open" in page.text and "secret" not in page.text
    assert client.get(
        reverse("admin:channels_app_channel_change", args=[secret.pk])
    ).status_code in (
        302,
        404,
    )

    client.force_login(member)  # no channel permission at all: the grant shows it
    page = client.get(CHANGELIST)
    assert page.status_code == 200 and "secret" in page.text
    assert client.get(reverse("admin:index")).status_code == 200


def _change_form(channel: Channel, grants: list[tuple[Group, str]], initial=()) -> dict:
    data = {
        "name": channel.name,
        "description": channel.description,
        "kind": channel.kind,
        "parent": channel.parent_id or "",
        "visibility": channel.visibility,
        "policy": "",
        "grants-TOTAL_FORMS": str(len(grants)),
        "grants-INITIAL_FORMS": str(len(initial)),
        "grants-MIN_NUM_FORMS": "0",
        "grants-MAX_NUM_FORMS": "1000",
    }
    for i, (group, level) in enumerate(grants):
        data |= {
            f"grants-{i}-group": group.pk,
            f"grants-{i}-level": level,
            f"grants-{i}-channel": channel.pk,
            f"grants-{i}-id": initial[i].pk if i < len(initial) else "",
        }
    return data


def test_admin_inline_edits_grants_with_manage_on_channels(client, secret):
    manager = member_of("Channels: Manage", username="manager")
    team = Group.objects.create(name="team-a")
    client.force_login(manager)
    url = reverse("admin:channels_app_channel_change", args=[secret.pk])

    page = client.get(url)
    assert page.status_code == 200 and "grants-TOTAL_FORMS" in page.text

    response = client.post(url, _change_form(secret, [(team, "write")]))

    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert list(secret.grants.values_list("group__name", "level")) == [("team-a", "write")]
    event = AuditEvent.objects.get(action="channel.grants")
    assert event.details == {"grants": {"team-a": "write"}}


def test_admin_inline_is_read_only_for_a_member_even_with_a_manage_grant(client, secret, member):
    grant(secret, member, group="team-a", level="manage")
    other = Group.objects.create(name="intruders")
    client.force_login(member)
    url = reverse("admin:channels_app_channel_change", args=[secret.pk])

    page = client.get(url)
    assert page.status_code == 200 and "team-a" in page.text

    data = _change_form(secret, [(other, "manage")])
    client.post(url, data)

    assert list(secret.grants.values_list("group__name", flat=True)) == ["team-a"]


def test_package_admin_hides_packages_of_private_channels_one_may_not_see(client, secret, outsider):
    from channels_app.models import Package

    public = ChannelFactory(name="open")
    for channel, filename in [(secret, "hidden-1.0-0.conda"), (public, "shown-1.0-0.conda")]:
        Package.objects.create(
            channel=channel, unit="noarch", filename=filename, name="x", version="1.0"
        )
    outsider.groups.add(Group.objects.get(name="Artifacts: Read"))
    client.force_login(outsider)

    page = client.get(reverse("admin:channels_app_package_changelist"))

    assert page.status_code == 200
    assert "shown-1.0-0.conda" in page.text and "hidden-1.0-0.conda" not in page.text


# --- API --------------------------------------------------------------------------------------


def test_api_replaces_grants_with_manage_on_channels(api_client, secret, inner):
    Group.objects.create(name="team-a")
    Group.objects.create(name="team-b")
    api_client.force_authenticate(
        member_of("Channels: Manage", "Subchannels: Manage", username="manager")
    )

    put = api_client.put(
        "/api/channels/secret/grants/",
        [{"group": "team-a", "level": "read"}, {"group": "team-b", "level": "manage"}],
        format="json",
    )
    assert put.status_code == 200, put.content
    assert put.json() == [
        {"group": "team-a", "level": "read"},
        {"group": "team-b", "level": "manage"},
    ]

    again = api_client.put(
        "/api/channels/secret/grants/", [{"group": "team-b", "level": "write"}], format="json"
    )
    assert again.json() == [{"group": "team-b", "level": "write"}]
    assert api_client.get("/api/channels/secret/grants/").json() == again.json()

    sub = api_client.put(
        "/api/channels/secret/subchannels/inner/grants/",
        [{"group": "team-a", "level": "read"}],
        format="json",
    )
    assert sub.status_code == 200
    assert list(inner.grants.values_list("group__name", flat=True)) == ["team-a"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"group": "nobody", "level": "read"}], "does not exist"),
        ([{"group": "team-a", "level": "owner"}], "not a valid choice"),
        (
            [{"group": "team-a", "level": "read"}, {"group": "team-a", "level": "write"}],
            "granted twice",
        ),
    ],
)
def test_api_refuses_bad_grants_and_keeps_the_old_ones(api_client, secret, member, body, message):
    api_client.force_authenticate(member_of("Channels: Manage", username="manager"))

    response = api_client.put("/api/channels/secret/grants/", body, format="json")

    assert response.status_code == 400 and message in response.text
    assert list(secret.grants.values_list("group__name", "level")) == [("team-a", "read")]


def test_api_grant_holders_see_grants_and_use_their_level_but_cannot_regrant(
    api_client, secret, member, outsider
):
    grant(secret, member, group="team-a", level="manage")
    api_client.force_authenticate(member)

    assert [c["name"] for c in api_client.get("/api/channels/").json()["results"]] == ["secret"]
    assert api_client.get("/api/channels/secret/grants/").status_code == 200
    assert api_client.post("/api/channels/secret/freeze/").status_code == 200
    put = api_client.put("/api/channels/secret/grants/", [], format="json")
    assert put.status_code == 403
    assert secret.grants.count() == 1

    api_client.force_authenticate(outsider)
    assert api_client.get("/api/channels/secret/").status_code == 404
    assert api_client.get("/api/channels/secret/grants/").status_code == 404
    assert api_client.get("/api/channels/").json()["results"] == []


def test_api_write_grant_creates_subchannels_in_that_channel_only(api_client, secret, member):
    grant(secret, member, group="team-a", level="write")
    ChannelFactory(name="elsewhere")
    api_client.force_authenticate(member)

    ok = api_client.post(
        "/api/channels/secret/subchannels/", {"name": "ml", "kind": "conda"}, format="json"
    )
    refused = api_client.post(
        "/api/channels/elsewhere/subchannels/", {"name": "ml", "kind": "conda"}, format="json"
    )

    assert ok.status_code == 201, ok.content
    assert refused.status_code == 403
    assert ChannelGrant.objects.filter(channel__name="ml").count() == 0


def test_add_form_offers_as_parents_only_private_channels_one_may_see(client, secret, member):
    grant(secret, member, group="team-a", level="write")
    ChannelFactory(name="hidden", visibility=PRIVATE)
    ChannelFactory(name="open")
    client.force_login(member)

    page = client.get(reverse("admin:channels_app_channel_add"))

    names = {str(c) for c in page.context["adminform"].form.fields["parent"].queryset}
    assert names == {"secret", "open"}

"""Subchannels and their mirrors have their own permission categories, apart from channels and
channel mirrors: in the admin, the API, tokens and package clients (channels_app/permissions.py,
mirrors_app/permissions.py)."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from channels_app import permissions as channel_rules
from channels_app.models import Channel
from mirrors_app import permissions as mirror_rules
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory, SyncRunFactory, UserFactory, grant

pytestmark = pytest.mark.django_db

INDEX = "noarch/repodata.json"
SOURCE = "http://127.0.0.1:9/conda-forge"
MIRRORS = reverse("admin:mirrors_app_mirror_changelist")
CHANNELS = reverse("admin:channels_app_channel_changelist")


@pytest.fixture
def main():
    return ChannelFactory(name="main")


@pytest.fixture
def sub(main):
    return ChannelFactory(name="staging", parent=main)


@pytest.fixture
def top_mirror(main):
    return MirrorFactory(channel=main, name="top")


@pytest.fixture
def sub_mirror(sub):
    return MirrorFactory(channel=sub, name="inner")


def member_of(*groups: str, username: str = "member"):
    """A staff user in PSM's category groups, e.g. "Channel mirrors: Manage"."""
    user = UserFactory(username=username)
    user.groups.add(*Group.objects.filter(name__in=groups))
    assert user.groups.count() == len(groups)
    return user


def texts_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- The rule ---------------------------------------------------------------------------------


def test_each_row_needs_the_permission_of_its_own_category(main, sub, top_mirror, sub_mirror):
    run = SyncRunFactory(mirror=sub_mirror)

    assert channel_rules.perm_for("freeze", main) == "channels_app.freeze_channel"
    assert channel_rules.perm_for("freeze", sub) == "channels_app.freeze_subchannel"
    assert mirror_rules.perm_for("run", top_mirror) == "mirrors_app.run_mirror"
    assert mirror_rules.perm_for("run", sub_mirror) == "mirrors_app.run_subchannel_mirror"
    assert (
        mirror_rules.perm_for("report", sub_mirror)
        == "mirrors_app.download_subchannel_dependency_report"
    )
    assert mirror_rules.perm_for("view", run) == "mirrors_app.view_subchannel_mirror"
    # Unsaved rows too: creating is decided by where the row goes.
    assert channel_rules.perm_for("add", Channel(parent=main)) == "channels_app.add_subchannel"
    assert mirror_rules.perm_for("add", Mirror(channel=main)) == "mirrors_app.add_mirror"


def test_superusers_may_do_everything(sub, sub_mirror):
    root = UserFactory(is_superuser=True)

    actions = ("view", "run", "stop", "delete")
    assert all(mirror_rules.may(root, action, sub_mirror) for action in actions)
    assert channel_rules.may(root, "freeze", sub)


# --- Mirrors: the channel mirror categories do not reach subchannel mirrors, and vice versa ----


@pytest.mark.parametrize(
    ("group", "allowed", "refused"),
    [
        ("Channel mirrors: Manage", "top_mirror", "sub_mirror"),
        ("Subchannel mirrors: Manage", "sub_mirror", "top_mirror"),
    ],
)
def test_api_mirror_commands_need_the_mirrors_own_category(
    request, api_client, django_capture_on_commit_callbacks, group, allowed, refused
):
    allowed, refused = request.getfixturevalue(allowed), request.getfixturevalue(refused)
    api_client.force_authenticate(member_of(group))

    # Not even visible: like a mirror that does not exist.
    for method, path, body in [
        ("get", "", None),
        ("patch", "", {"cron": "@daily"}),
        ("post", "run/", None),
        ("post", "stop/", None),
        ("post", "restart/", None),
        ("delete", "", None),
    ]:
        response = getattr(api_client, method)(
            f"/api/mirrors/{refused.pk}/{path}", body, format="json"
        )
        assert response.status_code == 404, (method, path)
    refused.refresh_from_db()
    assert refused.cron == "0 0 1 * *"
    assert not refused.runs.exists()

    with django_capture_on_commit_callbacks(execute=False):
        assert api_client.post(f"/api/mirrors/{allowed.pk}/run/").status_code == 202
    assert (
        api_client.patch(
            f"/api/mirrors/{allowed.pk}/", {"cron": "@daily"}, format="json"
        ).status_code
        == 200
    )
    listed = api_client.get("/api/mirrors/").json()["results"]
    assert [m["name"] for m in listed] == [allowed.name]


def test_api_mirror_command_needs_the_level_in_the_mirrors_category(
    api_client, top_mirror, sub_mirror
):
    # Manage on channel mirrors, only Read on subchannel mirrors: seen, but not run.
    api_client.force_authenticate(member_of("Channel mirrors: Manage", "Subchannel mirrors: Read"))

    assert api_client.get(f"/api/mirrors/{sub_mirror.pk}/").status_code == 200
    assert api_client.post(f"/api/mirrors/{sub_mirror.pk}/run/").status_code == 403
    assert api_client.delete(f"/api/mirrors/{sub_mirror.pk}/").status_code == 403
    assert Mirror.objects.filter(pk=sub_mirror.pk).exists()
    assert not sub_mirror.runs.exists()


@pytest.mark.parametrize(
    ("group", "channel", "ok"),
    [
        ("Channel mirrors: Write", "main", True),
        ("Channel mirrors: Write", "main/staging", False),
        ("Subchannel mirrors: Write", "main/staging", True),
        ("Subchannel mirrors: Write", "main", False),
    ],
)
def test_api_creating_a_mirror_needs_write_on_its_category(api_client, sub, group, channel, ok):
    api_client.force_authenticate(member_of(group))
    body = {"channel": channel, "name": "forge", "source_url": SOURCE, "kind": "conda"}

    response = api_client.post("/api/mirrors/", body, format="json")

    assert response.status_code == (201 if ok else 403), response.content
    assert Mirror.objects.exists() is ok


def test_api_runs_of_subchannel_mirrors_need_subchannel_mirror_read(
    api_client, top_mirror, sub_mirror
):
    mine = SyncRunFactory(mirror=top_mirror, state=SyncRun.State.COMPLETED)
    hidden = SyncRunFactory(mirror=sub_mirror, state=SyncRun.State.COMPLETED)
    api_client.force_authenticate(member_of("Channel mirrors: Read"))

    assert [r["id"] for r in api_client.get("/api/runs/").json()["results"]] == [mine.pk]
    assert api_client.get(f"/api/runs/{hidden.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("group", "allowed", "refused"),
    [
        ("Channel mirrors: Manage", "top_mirror", "sub_mirror"),
        ("Subchannel mirrors: Manage", "sub_mirror", "top_mirror"),
    ],
)
def test_admin_mirror_commands_need_the_mirrors_own_category(
    request, client, django_capture_on_commit_callbacks, group, allowed, refused
):
    allowed, refused = request.getfixturevalue(allowed), request.getfixturevalue(refused)
    client.force_login(member_of(group))

    # A mirror one may not see is a 404 on these pages, as on the API and for a missing one.
    for command in ("run", "stop", "restart"):
        url = reverse(f"admin:mirrors_app_mirror_{command}", args=[refused.pk])
        assert client.post(url).status_code == 404, command
    assert (
        client.get(reverse("admin:mirrors_app_mirror_details", args=[refused.pk])).status_code
        == 404
    )
    change = reverse("admin:mirrors_app_mirror_change", args=[refused.pk])
    client.post(
        change, {"name": "renamed", "source_url": SOURCE, "kind": "conda", "cron": "@daily"}
    )
    delete = reverse("admin:mirrors_app_mirror_delete", args=[refused.pk])
    client.post(delete, {"post": "yes"})
    refused.refresh_from_db()
    assert (refused.name, refused.cron) != ("renamed", "0 0 * * *")
    assert not refused.runs.exists()

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("admin:mirrors_app_mirror_run", args=[allowed.pk]))
    assert response.status_code == 302
    assert allowed.runs.exists()
    # All Mirrors lists only the mirrors of the user's category.
    listed = client.get(MIRRORS).context["cl"].result_list
    assert [m.name for m in listed] == [allowed.name]


def test_admin_bulk_action_skips_the_mirrors_the_user_may_not_run(
    client, top_mirror, sub_mirror, django_capture_on_commit_callbacks
):
    client.force_login(member_of("Channel mirrors: Manage", "Subchannel mirrors: Read"))

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            MIRRORS,
            {
                "action": "run_now",
                "index": "0",
                ACTION_CHECKBOX_NAME: [top_mirror.pk, sub_mirror.pk],
            },
        )

    assert response.status_code == 302
    assert top_mirror.runs.exists()
    assert not sub_mirror.runs.exists()
    assert "1 selected mirrors skipped: you may not run them." in texts_of(response)
    assert "1 mirror queued." in texts_of(response)


def test_admin_delete_selected_refuses_a_mirror_the_user_may_not_delete(
    client, top_mirror, sub_mirror
):
    client.force_login(member_of("Channel mirrors: Manage", "Subchannel mirrors: Write"))

    response = client.post(
        MIRRORS,
        {
            "action": "delete_selected",
            "index": "0",
            "post": "yes",
            ACTION_CHECKBOX_NAME: [top_mirror.pk, sub_mirror.pk],
        },
    )

    assert response.status_code == 403
    assert Mirror.objects.count() == 2


def test_admin_mirror_form_offers_only_channels_of_the_users_category(client, main, sub):
    client.force_login(member_of("Subchannel mirrors: Write"))
    add = reverse("admin:mirrors_app_mirror_add")

    choices = client.get(add).context["adminform"].form.fields["channel"].queryset
    assert list(choices) == [sub]

    data = {
        "channel": main.pk,
        "name": "forge",
        "mode": "passive",
        "source_url": SOURCE,
        "kind": "conda",
        "cron": "0 0 1 * *",
        "policy": "",
        "options": "{}",
        "source_confirmed": "on",  # nothing answers at SOURCE
    }
    refused = client.post(add, data)
    assert "channel" in refused.context["adminform"].form.errors
    assert client.post(add, data | {"channel": sub.pk}).status_code == 302
    assert Mirror.objects.get().channel == sub


def test_channel_page_lists_only_the_mirrors_the_user_may_see(client, sub, sub_mirror):
    client.force_login(member_of("Subchannels: Read", "Channel mirrors: Manage"))

    html = client.get(reverse("admin:channels_app_channel_change", args=[sub.pk])).content
    html = html.decode()

    assert "No mirrors yet." in html
    assert "Create mirror" not in html


# --- Channels and subchannels ------------------------------------------------------------------


def test_channels_read_does_not_show_subchannels(api_client, client, main, sub):
    user = member_of("Channels: Read")
    api_client.force_authenticate(user)
    client.force_login(user)

    channels = api_client.get("/api/channels/").json()["results"]
    assert [(c["name"], c["subchannels"]) for c in channels] == [("main", [])]
    assert api_client.get("/api/channels/main/subchannels/").status_code == 403
    assert api_client.get("/api/channels/main/subchannels/staging/").status_code == 403
    assert [c.path for c in client.get(CHANNELS).context["cl"].result_list] == ["main"]


def test_subchannels_read_shows_subchannels_only(api_client, client, main, sub):
    user = member_of("Subchannels: Read")
    api_client.force_authenticate(user)
    client.force_login(user)

    assert api_client.get("/api/channels/").status_code == 403
    listed = api_client.get("/api/channels/main/subchannels/").json()["results"]
    assert [c["path"] for c in listed] == ["main/staging"]
    assert [c.path for c in client.get(CHANNELS).context["cl"].result_list] == ["main/staging"]


@pytest.mark.parametrize(
    ("group", "subchannel_ok", "channel_ok"),
    [("Subchannels: Write", True, False), ("Channels: Write", False, True)],
)
def test_api_creating_a_subchannel_needs_subchannels_write(
    api_client, main, group, subchannel_ok, channel_ok
):
    api_client.force_authenticate(member_of(group))

    made_sub = api_client.post(
        "/api/channels/main/subchannels/", {"name": "ml", "kind": "conda"}, format="json"
    )
    made_top = api_client.post("/api/channels/", {"name": "other", "kind": "conda"}, format="json")

    assert made_sub.status_code == (201 if subchannel_ok else 403)
    assert made_top.status_code == (201 if channel_ok else 403)
    assert Channel.objects.filter(parent=main, name="ml").exists() is subchannel_ok


@pytest.mark.parametrize(
    ("group", "subchannel_ok", "channel_ok"),
    [("Subchannels: Write", True, False), ("Channels: Write", False, True)],
)
def test_admin_creating_a_subchannel_needs_subchannels_write(
    client, main, group, subchannel_ok, channel_ok
):
    client.force_login(member_of(group))
    add = reverse("admin:channels_app_channel_add")
    form = {"description": "", "kind": "conda", "policy": "", "visibility": "public"}

    made_sub = client.post(add, form | {"name": "ml", "parent": main.pk})
    made_top = client.post(add, form | {"name": "other", "parent": ""})

    assert (made_sub.status_code == 302) is subchannel_ok
    assert (made_top.status_code == 302) is channel_ok
    if not subchannel_ok:
        errors = made_sub.context["adminform"].form.errors["parent"]
        assert "channels_app.add_subchannel" in str(errors)
    assert Channel.objects.filter(parent=main, name="ml").exists() is subchannel_ok


def test_freezing_a_subchannel_needs_subchannels_manage(api_client, client, main, sub):
    user = member_of("Channels: Manage", "Subchannels: Read")
    api_client.force_authenticate(user)
    client.force_login(user)

    assert api_client.post("/api/channels/main/subchannels/staging/freeze/").status_code == 403
    response = client.post(
        CHANNELS, {"action": "freeze", "index": "0", ACTION_CHECKBOX_NAME: [main.pk, sub.pk]}
    )

    assert "1 selected channels skipped: you may not freeze them." in texts_of(response)
    assert set(Channel.objects.filter(frozen=True)) == {main}


def test_superuser_manages_subchannels_and_their_mirrors(
    api_client, sub_mirror, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(UserFactory(is_superuser=True))

    with django_capture_on_commit_callbacks(execute=False):
        assert api_client.post(f"/api/mirrors/{sub_mirror.pk}/run/").status_code == 202
    assert api_client.post("/api/channels/main/subchannels/staging/freeze/").status_code == 200
    assert api_client.get("/api/channels/").json()["results"][0]["subchannels"] == ["staging"]


# --- Tokens and package clients ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "top_ok", "sub_ok"),
    [
        ("channel.mirror:write", True, False),
        ("subchannel.mirror:write", False, True),
    ],
)
def test_scope_tokens_reach_only_their_mirror_category(
    api_client, top_mirror, sub_mirror, django_capture_on_commit_callbacks, scope, top_ok, sub_ok
):
    owner = UserFactory(is_superuser=True)
    _, secret = token_create(user=owner, name="ci", kind="scope", scopes=[scope])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    with django_capture_on_commit_callbacks(execute=False):
        top = api_client.post(f"/api/mirrors/{top_mirror.pk}/run/")
        sub = api_client.post(f"/api/mirrors/{sub_mirror.pk}/run/")

    assert (top.status_code == 202) is top_ok
    assert (sub.status_code == 202) is sub_ok


def test_private_subchannel_is_read_with_subchannels_manage_not_channels(client, main):
    ChannelFactory(name="internal", parent=main, visibility=Channel.Visibility.PRIVATE)
    url = f"/api/repo/main/internal/{INDEX}"

    for groups, status in [
        (["Channels: Manage"], 404),
        (["Subchannels: Read"], 404),  # Read alone never shows a private channel
        (["Subchannels: Manage"], 200),
    ]:
        client.force_login(member_of(*groups, username="-".join(groups)))
        assert client.get(url).status_code == status, groups


def test_scope_token_reads_a_private_subchannel_with_the_subchannel_scope(client, main):
    internal = ChannelFactory(name="internal", parent=main, visibility=Channel.Visibility.PRIVATE)
    owner = member_of("Channels: Read", "Subchannels: Read")
    grant(internal, owner)
    url = "/api/repo/t/{}/main/internal/" + INDEX

    for scope, status in [("channel:read", 404), ("subchannel:read", 200)]:
        _, secret = token_create(user=owner, name=scope, kind="scope", scopes=[scope])
        assert client.get(url.format(secret)).status_code == status, scope


# --- Upgrade ----------------------------------------------------------------------------------


def test_upgrade_gives_holders_of_channel_permissions_their_subchannel_twins():
    """Before the split the channel permissions covered subchannels: nobody loses access."""
    from importlib import import_module

    migration = import_module("psm.migrations.0002_subchannel_permissions")
    user = UserFactory()
    custom = Group.objects.create(name="release managers")
    managed = Group.objects.get(name="Channels: Read")

    def perm(codename: str) -> Permission:
        return Permission.objects.get(codename=codename)

    user.user_permissions.add(perm("run_mirror"))
    custom.permissions.add(perm("freeze_channel"))
    state = MigrationExecutor(connection).loader.project_state(
        ("psm", "0002_subchannel_permissions")
    )

    migration.copy_to_twins(state.apps, None)

    assert user.user_permissions.filter(codename="run_subchannel_mirror").exists()
    assert custom.permissions.filter(codename="freeze_subchannel").exists()
    # PSM's own groups are set by psm.roles: the Channels group does not grow.
    assert not managed.permissions.filter(codename="view_subchannel").exists()


# --- Channel privacy reaches mirrors and runs -------------------------------------------------


def test_mirrors_and_runs_of_a_channel_one_may_not_read_do_not_exist_for_them():
    """may() and filter_allowed() agree, on every row: a mirror or run of a private channel is
    seen and acted on only by those who may read the channel, whatever the mirror permissions."""
    private = Channel.Visibility.PRIVATE
    channels = [
        ChannelFactory(name="open"),
        ChannelFactory(name="signed", visibility=Channel.Visibility.AUTHENTICATED),
        secret := ChannelFactory(name="secret", visibility=private),
        ChannelFactory(name="inner", parent=secret, visibility=private),
        ChannelFactory(name="pub-sub", parent=secret),
    ]
    mirrors = [MirrorFactory(channel=c, name=f"m-{c.name}") for c in channels]
    runs = [SyncRunFactory(mirror=m) for m in mirrors]
    reader = member_of("Channel mirrors: Manage", "Subchannel mirrors: Manage", username="r")
    member = member_of("Channel mirrors: Manage", "Subchannel mirrors: Manage", username="g")
    grant(secret, member, group="secret-team")
    users = [
        reader,
        member,
        member_of("Channels: Manage", "Channel mirrors: Read", username="c-manage"),
        UserFactory(username="nobody"),
        UserFactory(username="root", is_superuser=True),
    ]

    for user, action in itertools.product(users, ("view", "change", "run", "delete")):
        allowed = set(mirror_rules.filter_allowed(user, action, Mirror.objects.all()))
        assert allowed == {m for m in mirrors if mirror_rules.may(user, action, m)}, (
            user.username,
            action,
        )
    for user in users:
        assert set(mirror_rules.filter_allowed(user, "view", SyncRun.objects.all())) == {
            r for r in runs if mirror_rules.may(user, "view", r.mirror)
        }
        assert set(channel_rules.visible_channels(user, Channel.objects.all())) == {
            c for c in channels if channel_rules.may_know(user, c)
        }
    # The mirror permissions alone reach the public and authenticated channels only (and a
    # public subchannel: a subchannel has its own privacy); a grant opens the private ones.
    assert {
        m.channel.name for m in mirror_rules.filter_allowed(reader, "view", Mirror.objects.all())
    } == {
        "open",
        "signed",
        "pub-sub",
    }
    assert len(mirror_rules.filter_allowed(member, "view", Mirror.objects.all())) == 5
    assert not mirror_rules.may(reader, "add", Mirror(channel=secret)) and mirror_rules.may(
        member, "add", Mirror(channel=secret)
    )

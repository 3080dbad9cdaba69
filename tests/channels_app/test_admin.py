"""The channels admin: search, freeze/unfreeze actions, the Mirrors tab, and the add form."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from channels_app.models import Channel
from tests.factories import ChannelFactory, MirrorFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:channels_app_channel_changelist")
ADD = reverse("admin:channels_app_channel_add")
VIEW_CHANGE = ("channels_app.view_channel", "channels_app.change_channel")


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def action_names(response) -> set[str]:
    form = response.context["action_form"]  # None when no action at all is available
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def post_action(client, action: str, *channels):
    return client.post(
        CHANGELIST,
        {"action": action, "index": "0", ACTION_CHECKBOX_NAME: [c.pk for c in channels]},
    )


@pytest.fixture
def freezer(make_user, client):
    user = make_user(*VIEW_CHANGE, "channels_app.freeze_channel", username="freezer")
    client.force_login(user)
    return user


# --- Changelist ---------------------------------------------------------------------------


def test_changelist_search_finds_channels_by_name(client, make_user):
    ChannelFactory(name="conda-forge-mirror")
    ChannelFactory(name="internal")
    client.force_login(make_user("channels_app.view_channel"))

    response = client.get(CHANGELIST, {"q": "forge"})

    assert response.status_code == 200
    assert [c.name for c in response.context["cl"].result_list] == ["conda-forge-mirror"]
    assert "internal" not in response.content.decode()


def test_changelist_shows_subchannel_paths_and_mirror_counts(client, make_user):
    parent = ChannelFactory(name="team")
    sub = ChannelFactory(name="ml", parent=parent)
    MirrorFactory(channel=sub)
    MirrorFactory(channel=sub)
    client.force_login(make_user("channels_app.view_channel", "channels_app.view_subchannel"))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    rows = {c.path: c._mirror_count for c in response.context["cl"].result_list}
    assert rows == {"team": 0, "team/ml": 2}
    assert "team/ml" in response.content.decode()


def test_changelist_needs_view_permission(client, make_user):
    client.force_login(make_user())
    assert client.get(CHANGELIST).status_code == 403


# --- Freeze / unfreeze --------------------------------------------------------------------


def test_freeze_and_unfreeze_are_offered_with_the_permission(client, freezer):
    ChannelFactory()
    response = client.get(CHANGELIST)
    assert {"freeze", "unfreeze"} <= action_names(response)


def test_freeze_action_records_who_and_when(client, freezer):
    channel = ChannelFactory()
    other = ChannelFactory()

    response = post_action(client, "freeze", channel)

    assert response.status_code == 302
    assert messages_of(response) == ["1 channel frozen."]
    channel.refresh_from_db()
    assert channel.frozen
    assert channel.frozen_by == freezer
    assert channel.frozen_at is not None
    other.refresh_from_db()
    assert not other.frozen


def test_freeze_counts_only_channels_that_changed(client, freezer):
    already = ChannelFactory()
    already.freeze(freezer)
    already.save()
    fresh = ChannelFactory()

    response = post_action(client, "freeze", already, fresh)

    assert messages_of(response) == ["1 channel frozen."]
    fresh.refresh_from_db()
    assert fresh.frozen


def test_unfreeze_action_clears_who_and_when(client, freezer):
    channel = ChannelFactory()
    channel.freeze(freezer)
    channel.save()

    response = post_action(client, "unfreeze", channel)

    assert response.status_code == 302
    assert messages_of(response) == ["1 channel unfrozen."]
    channel.refresh_from_db()
    assert not channel.frozen
    assert channel.frozen_by is None
    assert channel.frozen_at is None


def test_frozen_channel_page_says_who_froze_it(client, freezer):
    channel = ChannelFactory()
    post_action(client, "freeze", channel)

    response = client.get(reverse("admin:channels_app_channel_change", args=[channel.pk]))

    assert "Yes, by freezer at" in response.content.decode()


def test_freeze_is_not_offered_without_the_permission(client, make_user):
    channel = ChannelFactory()
    client.force_login(make_user(*VIEW_CHANGE))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert not {"freeze", "unfreeze"} & action_names(response)
    # With no action available at all, a posted one is ignored and the list re-rendered.
    response = post_action(client, "freeze", channel)
    assert response.status_code == 200
    channel.refresh_from_db()
    assert not channel.frozen


@pytest.mark.parametrize("action", ["freeze", "unfreeze"])
def test_posting_freeze_without_the_permission_does_nothing(client, make_user, action):
    other = make_user()
    channel = ChannelFactory()
    if action == "unfreeze":
        channel.freeze(other)
        channel.save()
    # delete_selected is available, so the action form is shown: freeze is not among its choices.
    client.force_login(make_user(*VIEW_CHANGE, "channels_app.delete_channel"))
    assert action_names(client.get(CHANGELIST)) == {"delete_selected"}

    response = post_action(client, action, channel)

    assert response.status_code == 302
    assert messages_of(response) == ["No action selected."]
    channel.refresh_from_db()
    assert channel.frozen == (action == "unfreeze")
    assert channel.frozen_by == (other if action == "unfreeze" else None)


# --- The channel's Mirrors tab ------------------------------------------------------------


def test_change_page_lists_mirrors_with_the_actions_the_user_may_take(client, make_user):
    channel = ChannelFactory()
    mirror = MirrorFactory(channel=channel, name="forge")
    MirrorFactory(name="elsewhere")  # another channel's mirror is not listed
    client.force_login(make_user(*VIEW_CHANGE, "mirrors_app.view_mirror", "mirrors_app.add_mirror"))

    response = client.get(reverse("admin:channels_app_channel_change", args=[channel.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "forge" in html
    assert "elsewhere" not in html
    for name in ("change", "details"):
        assert reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk]) in html
    for name in ("run", "stop", "restart", "delete"):  # no permission for these
        assert reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk]) not in html
    add_url = reverse("admin:mirrors_app_mirror_add") + f"?channel={channel.pk}"
    assert f"href='{add_url}'>Create mirror</a>" in html


def test_change_page_without_mirrors_still_offers_create_mirror(client, make_user):
    channel = ChannelFactory()
    client.force_login(make_user(*VIEW_CHANGE, "mirrors_app.add_mirror"))

    html = client.get(reverse("admin:channels_app_channel_change", args=[channel.pk])).content
    html = html.decode()

    assert "No mirrors yet." in html
    assert f"?channel={channel.pk}'>Create mirror</a>" in html


# --- Add form -----------------------------------------------------------------------------


@pytest.fixture
def creator(make_user, client):
    user = make_user(
        "channels_app.add_channel",
        "channels_app.view_channel",
        "channels_app.add_subchannel",
        "channels_app.view_subchannel",
    )
    client.force_login(user)
    return user


def channel_form(**overrides) -> dict:
    return {"name": "team", "description": "", "kind": "conda", "parent": "", "policy": ""} | (
        overrides
    )


def test_add_form_creates_a_channel(client, creator):
    response = client.post(ADD, channel_form(kind="pypi"))

    assert response.status_code == 302
    channel = Channel.objects.get()
    assert (channel.name, channel.kind, channel.parent) == ("team", "pypi", None)


def test_add_form_creates_a_subchannel(client, creator):
    parent = ChannelFactory(name="team")

    response = client.post(ADD, channel_form(name="ml", parent=parent.pk))

    assert response.status_code == 302
    assert Channel.objects.get(name="ml").path == "team/ml"


def test_add_form_offers_package_types_from_the_registry(client, creator):
    response = client.get(ADD)

    assert response.status_code == 200
    html = response.content.decode()
    for label in ("conda", "standard python", "standard R"):
        assert label in html


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "Team"}, "name", "Use lower-case letters"),
        ({"name": "-team"}, "name", "Use lower-case letters"),
        ({"kind": "npm"}, "kind", "Select a valid choice"),
    ],
)
def test_add_form_rejects_bad_input(client, creator, data, field, message):
    response = client.post(ADD, channel_form(**data))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not Channel.objects.exists()


def test_add_form_rejects_a_duplicate_name(client, creator):
    ChannelFactory(name="team")

    response = client.post(ADD, channel_form())

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "A channel with this name already exists." in str(form.errors)
    assert Channel.objects.count() == 1


def test_add_form_rejects_a_subchannel_of_a_subchannel(client, creator):
    parent = ChannelFactory(name="team")
    sub = ChannelFactory(name="ml", parent=parent)

    response = client.post(ADD, channel_form(name="deep", parent=sub.pk))

    assert response.status_code == 200
    assert "parent" in response.context["adminform"].form.errors
    assert not Channel.objects.filter(name="deep").exists()
    # A subchannel is not even offered as a parent.
    choices = [
        str(value) for value, _ in response.context["adminform"].form["parent"].field.choices
    ]
    assert str(parent.pk) in choices
    assert str(sub.pk) not in choices


def test_add_form_rejects_a_duplicate_subchannel_name(client, creator):
    parent = ChannelFactory(name="team")
    ChannelFactory(name="ml", parent=parent)

    response = client.post(ADD, channel_form(name="ml", parent=parent.pk))

    assert response.status_code == 200
    assert "already has a subchannel with this name" in str(
        response.context["adminform"].form.errors
    )
    assert Channel.objects.filter(name="ml").count() == 1


def test_add_form_rejects_a_subchannel_hiding_a_folder_of_its_parent(client, creator):
    parent = ChannelFactory(name="rpkgs", kind="cran")

    response = client.post(ADD, channel_form(name="cran", kind="cran", parent=parent.pk))

    assert response.status_code == 200
    assert "is a folder of every standard R channel" in str(
        response.context["adminform"].form.errors["name"]
    )
    assert not Channel.objects.filter(name="cran").exists()


def test_add_form_needs_add_permission(client, make_user):
    client.force_login(make_user("channels_app.view_channel"))

    assert client.get(ADD).status_code == 403
    assert client.post(ADD, channel_form()).status_code == 403
    assert not Channel.objects.exists()

"""A channel's own page: its Manage menu (freeze and unfreeze with a confirmation, add mirror,
add subchannel, grants), its subchannels, and the frozen banner there and on its mirrors'
details."""

from __future__ import annotations

import pytest
from django.urls import reverse

from channels_app.models import Channel
from tests.factories import ChannelFactory, MirrorFactory, grant

pytestmark = pytest.mark.django_db

VIEW = ("channels_app.view_channel", "channels_app.view_subchannel")


def page(channel: Channel) -> str:
    return reverse("admin:channels_app_channel_change", args=[channel.pk])


def freeze_url(channel: Channel, name: str = "freeze") -> str:
    return reverse(f"admin:channels_app_channel_{name}", args=[channel.pk])


def menu(response) -> dict[str, str]:
    return dict(response.context["manage_links"])


# --- The Manage menu ----------------------------------------------------------------------


def test_manage_menu_of_a_superuser(admin_client):
    channel = ChannelFactory(name="forge", kind="pypi")

    response = admin_client.get(page(channel))

    assert menu(response) == {
        "Freeze": freeze_url(channel),
        "Add mirror": reverse("admin:mirrors_app_mirror_add") + f"?channel={channel.pk}",
        "Add subchannel": reverse("admin:channels_app_channel_add")
        + f"?parent={channel.pk}&kind=pypi",
        "Grants": "#grants-group",
    }
    html = response.content.decode()
    assert '<details id="manage-menu"><summary>Manage</summary>' in html
    assert 'id="grants-group"' in html  # where "Grants" leads


def test_manage_menu_offers_only_what_the_user_may_do(client, make_user):
    channel = ChannelFactory()
    client.force_login(make_user(*VIEW))

    assert menu(client.get(page(channel))) == {"Grants": "#grants-group"}


def test_a_frozen_channel_offers_unfreeze(admin_client, admin_user):
    channel = ChannelFactory()
    channel.freeze(admin_user)
    channel.save()

    links = menu(admin_client.get(page(channel)))

    assert links["Unfreeze"] == freeze_url(channel, "unfreeze")
    assert "Freeze" not in links


def test_a_subchannel_offers_no_subchannel(admin_client):
    sub = ChannelFactory(parent=ChannelFactory())

    assert "Add subchannel" not in menu(admin_client.get(page(sub)))


def test_a_grant_to_write_offers_add_subchannel(client, make_user):
    channel = ChannelFactory()
    user = make_user()
    grant(channel, user, level="write")
    client.force_login(user)

    links = menu(client.get(page(channel)))

    assert "Add subchannel" in links
    assert "Freeze" not in links  # freezing needs Manage
    assert client.get(links["Add subchannel"]).status_code == 200


def test_add_subchannel_is_prefilled(admin_client):
    channel = ChannelFactory(name="forge", kind="cran")

    response = admin_client.get(menu(admin_client.get(page(channel)))["Add subchannel"])

    form = response.context["adminform"].form
    assert str(form["parent"].value()) == str(channel.pk)
    assert form["kind"].value() == "cran"


# --- Freeze and unfreeze from the page ----------------------------------------------------


def test_freeze_asks_first_then_freezes(admin_client, admin_user):
    channel = ChannelFactory(name="forge")

    confirm = admin_client.get(freeze_url(channel))

    assert confirm.status_code == 200
    assert "Freeze channel <strong>forge</strong>?" in confirm.content.decode()
    channel.refresh_from_db()
    assert not channel.frozen

    response = admin_client.post(freeze_url(channel))

    assert response.status_code == 302
    assert response["Location"] == page(channel)
    channel.refresh_from_db()
    assert channel.frozen
    assert channel.frozen_by == admin_user


def test_unfreeze_from_the_page(admin_client, admin_user, django_capture_on_commit_callbacks):
    channel = ChannelFactory()
    channel.freeze(admin_user)
    channel.save()

    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post(freeze_url(channel, "unfreeze"))

    assert response.status_code == 302
    channel.refresh_from_db()
    assert not channel.frozen


@pytest.mark.parametrize("name", ["freeze", "unfreeze"])
def test_freezing_needs_the_permission(client, make_user, name):
    channel = ChannelFactory()
    client.force_login(make_user(*VIEW, "channels_app.change_channel"))

    assert client.get(freeze_url(channel, name)).status_code == 403
    assert client.post(freeze_url(channel, name)).status_code == 403
    channel.refresh_from_db()
    assert not channel.frozen


def test_a_private_channel_one_may_not_see_is_not_found(client, make_user):
    channel = ChannelFactory(visibility=Channel.Visibility.PRIVATE)
    client.force_login(make_user(*VIEW, "channels_app.freeze_channel"))

    assert client.get(freeze_url(channel)).status_code == 404


# --- The frozen banner --------------------------------------------------------------------


def test_frozen_banner_on_the_channel_and_its_mirrors_details(admin_client, admin_user):
    channel = ChannelFactory(name="forge")
    mirror = MirrorFactory(channel=channel)
    details = reverse("admin:mirrors_app_mirror_details", args=[mirror.pk])
    assert 'id="frozen-banner"' not in admin_client.get(page(channel)).content.decode()
    assert 'id="frozen-banner"' not in admin_client.get(details).content.decode()

    channel.freeze(admin_user)
    channel.save()

    for url in (page(channel), details):
        html = admin_client.get(url).content.decode()
        assert 'id="frozen-banner">Channel forge is frozen by admin' in html, url


# --- Subchannels --------------------------------------------------------------------------


def test_subchannels_are_listed_with_kind_mirrors_and_frozen(admin_client, admin_user):
    channel = ChannelFactory(name="forge")
    ml = ChannelFactory(name="ml", parent=channel)
    MirrorFactory(channel=ml)
    MirrorFactory(channel=ml)
    frozen = ChannelFactory(name="pinned", parent=channel)
    frozen.freeze(admin_user)
    frozen.save()

    html = admin_client.get(page(channel)).content.decode()

    table = html[html.index("<table id='subchannels'>") :]
    table = table[: table.index("</table>")]
    assert f"<a href='{page(ml)}'>ml</a></td><td>conda</td><td>Public</td><td>2</td><td>No" in table
    assert f"<a href='{page(frozen)}'>pinned</a>" in table
    assert "<td>0</td><td>Frozen</td>" in table


def test_private_subchannels_are_not_listed_to_those_who_may_not_read_them(client, make_user):
    channel = ChannelFactory()
    ChannelFactory(name="open", parent=channel)
    ChannelFactory(name="secret", parent=channel, visibility=Channel.Visibility.PRIVATE)
    client.force_login(make_user(*VIEW))

    html = client.get(page(channel)).content.decode()

    assert ">open</a>" in html
    assert "secret" not in html


def test_a_subchannel_page_lists_no_subchannels(admin_client):
    sub = ChannelFactory(parent=ChannelFactory())

    assert "subchannels_table" not in admin_client.get(page(sub)).context["adminform"].form.fields
    assert "<table id='subchannels'>" not in admin_client.get(page(sub)).content.decode()

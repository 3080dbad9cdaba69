"""Channel create, change and delete are audited through the services: the admin and the API
record the same thing."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from channels_app.models import Channel
from psm.models import AuditEvent
from tests.factories import ChannelFactory, MirrorFactory, UserFactory

pytestmark = pytest.mark.django_db

NO_GRANTS = {
    "grants-TOTAL_FORMS": "0",
    "grants-INITIAL_FORMS": "0",
    "grants-MIN_NUM_FORMS": "0",
    "grants-MAX_NUM_FORMS": "1000",
}


@pytest.fixture
def operator():
    return UserFactory(username="ops", is_superuser=True)


def trail(name: str) -> list[tuple]:
    """The audit records about channel `name`, with the name itself taken out."""
    return [
        (
            e.actor_name,
            e.action,
            e.target_type,
            e.target_name.replace(name, "<name>"),
            {
                k: v.replace(name, "<name>") if isinstance(v, str) else v
                for k, v in e.details.items()
            },
        )
        for e in AuditEvent.objects.filter(action__startswith="channel.").order_by("pk")
        if name in e.target_name
    ]


def through_admin(client, name: str) -> None:
    form = {"name": name, "description": "", "kind": "conda", "parent": "", "policy": ""}
    assert client.post(reverse("admin:channels_app_channel_add"), form).status_code == 302
    channel = Channel.objects.get(name=name)
    changed = {**form, "description": "Team packages", "visibility": "private", **NO_GRANTS}
    change = reverse("admin:channels_app_channel_change", args=[channel.pk])
    assert client.post(change, changed).status_code == 302
    delete = reverse("admin:channels_app_channel_delete", args=[channel.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302


def through_api(api_client, name: str) -> None:
    created = api_client.post("/api/channels/", {"name": name, "kind": "conda"}, format="json")
    assert created.status_code == 201, created.content
    changed = api_client.patch(
        f"/api/channels/{name}/",
        {"description": "Team packages", "visibility": "private"},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    assert api_client.delete(f"/api/channels/{name}/").status_code == 204


def test_admin_and_api_record_the_same_create_change_and_delete(client, api_client, operator):
    client.force_login(operator)
    api_client.force_authenticate(operator)

    through_admin(client, "by-admin")
    through_api(api_client, "by-api")

    for name in ("by-admin", "by-api"):
        assert trail(name) == [
            (
                "ops",
                "channel.create",
                "channel",
                "<name>",
                {"path": "<name>", "kind": "conda", "visibility": "public"},
            ),
            (
                "ops",
                "channel.change",
                "channel",
                "<name>",
                {"path": "<name>", "fields": ["description", "visibility"]},
            ),
            (
                "ops",
                "channel.delete",
                "channel",
                "<name>",
                {"path": "<name>", "subchannels": [], "mirrors": []},
            ),
        ]
    assert trail("by-admin") == trail("by-api")


def test_subchannels_are_audited_alike_from_the_admin_and_the_api(client, api_client, operator):
    parent = ChannelFactory(name="team")
    client.force_login(operator)
    api_client.force_authenticate(operator)

    form = {"name": "ml", "description": "", "kind": "conda", "parent": parent.pk, "policy": ""}
    assert client.post(reverse("admin:channels_app_channel_add"), form).status_code == 302
    created = api_client.post(
        "/api/channels/team/subchannels/", {"name": "web", "kind": "conda"}, format="json"
    )
    assert created.status_code == 201, created.content
    assert (
        api_client.patch(
            "/api/channels/team/subchannels/web/", {"description": "x"}, format="json"
        ).status_code
        == 200
    )
    assert api_client.delete("/api/channels/team/subchannels/web/").status_code == 204

    # The same records as for the admin's subchannel, and as for top-level channels.
    assert [(r[1], r[4]) for r in trail("team/ml")] == [
        ("channel.create", {"path": "<name>", "kind": "conda", "visibility": "public"}),
    ]
    assert [(r[1], r[4]) for r in trail("team/web")] == [
        ("channel.create", {"path": "<name>", "kind": "conda", "visibility": "public"}),
        ("channel.change", {"path": "<name>", "fields": ["description"]}),
        ("channel.delete", {"path": "<name>", "subchannels": [], "mirrors": []}),
    ]


def test_deleting_a_channel_records_the_subchannels_and_mirrors_deleted_with_it(client, operator):
    parent = ChannelFactory(name="team")
    sub = ChannelFactory(name="zeta", parent=parent)  # after its parent in the name order
    MirrorFactory(channel=parent, name="forge")
    MirrorFactory(channel=sub, name="zeta-forge")
    client.force_login(operator)

    # Both selected: the subchannel goes with its parent, and is recorded once, there.
    response = client.post(
        reverse("admin:channels_app_channel_changelist"),
        {"action": "delete_selected", "post": "yes", ACTION_CHECKBOX_NAME: [parent.pk, sub.pk]},
    )

    assert response.status_code == 302
    assert not Channel.objects.exists()
    deleted = AuditEvent.objects.get(action="channel.delete")
    assert deleted.details == {
        "path": "team",
        "subchannels": ["zeta"],
        "mirrors": ["forge", "zeta-forge"],
    }


def test_an_api_change_that_fails_validation_records_nothing(api_client, operator):
    ChannelFactory(name="main")
    api_client.force_authenticate(operator)

    response = api_client.patch("/api/channels/main/", {"visibility": "everyone"}, format="json")

    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action__startswith="channel.").exists()

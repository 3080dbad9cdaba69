"""The audit log: who froze, ran, stopped, restarted, deleted, changed a policy, and when."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from mirrors_app.models import SyncRun
from psm.models import AuditEvent
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, SyncRunFactory

pytestmark = pytest.mark.django_db


def _events() -> list[tuple[str, str, str, str]]:
    """Every event but sign-ins (force_login is one)."""
    return [
        (e.actor_name, e.action, e.target_type, e.target_name)
        for e in AuditEvent.objects.exclude(action="login").order_by("id")
    ]


def test_admin_freeze_and_unfreeze_are_recorded(client, make_user):
    user = make_user(
        "channels_app.view_channel",
        "channels_app.change_channel",
        "channels_app.freeze_channel",
        username="fay",
    )
    client.force_login(user)
    channel = ChannelFactory(name="main")
    url = "/admin/channels_app/channel/"

    for action in ("freeze", "unfreeze"):
        client.post(url, {"action": action, "index": "0", ACTION_CHECKBOX_NAME: [channel.pk]})

    assert _events()[-2:] == [
        ("fay", "channel.freeze", "channel", "main"),
        ("fay", "channel.unfreeze", "channel", "main"),
    ]


def test_api_run_stop_restart_and_delete_of_mirrors_are_recorded(api_client):
    from tests.factories import UserFactory

    api_client.force_login(UserFactory(username="root", is_superuser=True))
    mirror = MirrorFactory(name="forge", channel=ChannelFactory(name="main"))

    api_client.post(f"/api/mirrors/{mirror.pk}/run/")
    api_client.post(f"/api/mirrors/{mirror.pk}/stop/")
    api_client.post(f"/api/mirrors/{mirror.pk}/restart/")
    SyncRun.objects.update(state=SyncRun.State.COMPLETED)
    api_client.delete(f"/api/mirrors/{mirror.pk}/")

    assert [(a, action, name) for a, action, _, name in _events()] == [
        ("root", "mirror.run", "forge"),
        ("root", "mirror.stop", "forge"),
        ("root", "mirror.restart", "forge"),
        ("root", "mirror.delete", "forge"),
    ]
    assert isinstance(AuditEvent.objects.get(action="mirror.run").details["run"], int)


def test_admin_mirror_commands_are_recorded(client, make_user):
    user = make_user("mirrors_app.view_mirror", "mirrors_app.stop_mirror", username="sam")
    client.force_login(user)
    run = SyncRunFactory(state=SyncRun.State.RUNNING, mirror__name="forge")

    client.post(f"/admin/mirrors_app/mirror/{run.mirror.pk}/stop/")

    assert _events() == [("sam", "mirror.stop", "mirror", "forge")]


def test_policy_create_change_delete_are_recorded_with_the_changed_fields(api_client, make_user):
    api_client.force_login(
        make_user(
            "policies_app.view_policy",
            "policies_app.add_policy",
            "policies_app.change_policy",
            "policies_app.delete_policy",
            username="pat",
        )
    )

    created = api_client.post("/api/policies/", {"name": "strict"}, format="json").json()
    api_client.patch(
        f"/api/policies/{created['id']}/", {"block_specs": ["openssl <3"]}, format="json"
    )
    api_client.delete(f"/api/policies/{created['id']}/")

    assert [(a, action, name) for a, action, _, name in _events()] == [
        ("pat", "policy.create", "strict"),
        ("pat", "policy.change", "strict"),
        ("pat", "policy.delete", "strict"),
    ]
    assert AuditEvent.objects.get(action="policy.change").details["fields"] == ["block_specs"]


def test_a_refused_policy_delete_leaves_no_event(api_client):
    from tests.factories import UserFactory

    api_client.force_login(UserFactory(is_superuser=True))
    policy = PolicyFactory()
    ChannelFactory(policy=policy)

    assert api_client.delete(f"/api/policies/{policy.pk}/").status_code == 409
    assert not AuditEvent.objects.filter(action="policy.delete").exists()


def test_admin_policy_edit_is_recorded(client, make_user):
    client.force_login(
        make_user("policies_app.view_policy", "policies_app.add_policy", username="pat")
    )

    client.post("/admin/policies_app/policy/add/", {"name": "lenient"})

    assert _events() == [("pat", "policy.create", "policy", "lenient")]


def test_the_log_is_visible_read_only_in_the_admin_and_the_api(client, api_client, make_user):
    reader = make_user("psm.view_auditevent", username="auditor")
    AuditEvent.objects.create(actor_name="fay", action="channel.freeze", target_name="main")
    client.force_login(reader)

    listing = client.get("/admin/psm/auditevent/?action=channel.freeze")

    assert listing.status_code == 200 and "channel.freeze" in listing.content.decode()
    assert client.get("/admin/psm/auditevent/add/").status_code == 403
    api_client.force_login(reader)
    events = api_client.get("/api/audit/", {"action": "channel.freeze"}).json()["results"]
    assert [e["actor_name"] for e in events] == ["fay"]
    api_client.force_login(make_user(username="nobody"))
    assert api_client.get("/api/audit/").status_code == 403

"""REST API for mirrors and their runs: /api/mirrors/ and /api/runs/.

No broker runs during these tests: every request that queues a run captures the on_commit
callbacks without executing them, or executes them against a patched `sync_mirror.delay`.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django_celery_beat.models import PeriodicTask

from channels_app.models import Artifact, Package
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, SyncRunFactory

pytestmark = pytest.mark.django_db

SOURCE = "http://127.0.0.1:9/conda-forge"
CHANNEL_MIRROR_PERMS = (
    "mirrors_app.view_mirror",
    "mirrors_app.add_mirror",
    "mirrors_app.change_mirror",
    "mirrors_app.delete_mirror",
    "mirrors_app.run_mirror",
    "mirrors_app.stop_mirror",
    "mirrors_app.restart_mirror",
    "mirrors_app.view_all_mirrors",
)
SUBCHANNEL_MIRROR_PERMS = (
    "mirrors_app.view_subchannel_mirror",
    "mirrors_app.add_subchannel_mirror",
    "mirrors_app.change_subchannel_mirror",
    "mirrors_app.delete_subchannel_mirror",
    "mirrors_app.run_subchannel_mirror",
    "mirrors_app.stop_subchannel_mirror",
    "mirrors_app.restart_subchannel_mirror",
)
ALL_MIRROR_PERMS = CHANNEL_MIRROR_PERMS + SUBCHANNEL_MIRROR_PERMS


@pytest.fixture
def admin_client(api_client, make_user):
    """A client logged in as a user holding every mirror permission."""
    api_client.force_authenticate(make_user(*ALL_MIRROR_PERMS, username="admin"))
    return api_client


@pytest.fixture
def channel():
    return ChannelFactory(name="main", kind="conda")


@pytest.fixture
def no_broker(django_capture_on_commit_callbacks):
    """Capture on_commit callbacks (the task dispatch) for the whole test, never running them.

    The captured list only fills when the block ends; to count dispatches, tests wrap the
    request in their own `django_capture_on_commit_callbacks()` block.
    """
    with django_capture_on_commit_callbacks(execute=False):
        yield


def mirror_body(**overrides) -> dict:
    body = {"channel": "main", "name": "conda-forge", "source_url": SOURCE, "kind": "conda"}
    body.update(overrides)
    return body


def create(client, **overrides):
    return client.post("/api/mirrors/", mirror_body(**overrides), format="json")


# --- authentication ----------------------------------------------------------------------------


def test_anonymous_user_is_refused(api_client, channel, no_broker):
    mirror = MirrorFactory(channel=channel)

    assert api_client.get("/api/mirrors/").status_code in (401, 403)
    assert api_client.get(f"/api/mirrors/{mirror.pk}/").status_code in (401, 403)
    assert api_client.get("/api/mirrors/?channel=main").status_code in (401, 403)
    assert create(api_client).status_code in (401, 403)
    assert api_client.post(f"/api/mirrors/{mirror.pk}/run/").status_code in (401, 403)
    assert api_client.get("/api/runs/").status_code in (401, 403)
    assert not SyncRun.objects.exists()


def test_session_login_authenticates(api_client, make_user, channel):
    user = make_user("mirrors_app.view_mirror")
    MirrorFactory(channel=channel, name="m")

    assert api_client.login(username=user.username, password="pw")
    response = api_client.get("/api/mirrors/?channel=main")

    assert response.status_code == 200
    assert [m["name"] for m in response.json()["results"]] == ["m"]


def test_token_header_authenticates_and_runs_mirror(
    api_client, make_user, channel, django_capture_on_commit_callbacks
):
    user = make_user("mirrors_app.run_mirror", username="robot")
    _, secret = token_create(user=user, name="cli", kind="scope", scopes=["*:manage"])
    mirror = MirrorFactory(channel=channel)

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client.post(f"/api/mirrors/{mirror.pk}/run/")

    assert response.status_code == 202
    assert response.json()["requested_by"] == "robot"
    assert len(callbacks) == 1


# --- permissions -------------------------------------------------------------------------------

MIRROR_REQUESTS = [
    # (permission, method, url ("{id}" is the mirror's id), body, success status)
    ("mirrors_app.view_mirror", "get", "/api/mirrors/{id}/", None, 200),
    ("mirrors_app.view_mirror", "get", "/api/mirrors/?channel=main", None, 200),
    ("mirrors_app.view_mirror", "get", "/api/mirrors/{id}/details/", None, 200),
    ("mirrors_app.add_mirror", "post", "/api/mirrors/", mirror_body(name="new"), 201),
    ("mirrors_app.change_mirror", "patch", "/api/mirrors/{id}/", {"cron": "@daily"}, 200),
    ("mirrors_app.delete_mirror", "delete", "/api/mirrors/{id}/", None, 204),
    ("mirrors_app.run_mirror", "post", "/api/mirrors/{id}/run/", None, 202),
    ("mirrors_app.restart_mirror", "post", "/api/mirrors/{id}/restart/", None, 202),
    ("mirrors_app.view_syncrun", "get", "/api/runs/", None, 200),
]


def _request(client, method, url, body, mirror):
    return getattr(client, method)(url.format(id=mirror.pk), body, format="json")


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), MIRROR_REQUESTS)
def test_request_without_its_permission_is_forbidden(
    api_client, make_user, channel, no_broker, perm, method, url, body, ok
):
    mirror = MirrorFactory(channel=channel, cron="0 0 1 * *")
    others = [p for p in (*CHANNEL_MIRROR_PERMS, "mirrors_app.view_syncrun") if p != perm]
    api_client.force_authenticate(make_user(*others))

    response = _request(api_client, method, url, body, mirror)

    assert response.status_code == 403
    assert list(Mirror.objects.all()) == [mirror]
    assert Mirror.objects.get().cron == "0 0 1 * *"
    assert not SyncRun.objects.exists()


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), MIRROR_REQUESTS)
def test_request_with_its_permission_succeeds(
    api_client, make_user, channel, no_broker, perm, method, url, body, ok
):
    mirror = MirrorFactory(channel=channel)
    api_client.force_authenticate(make_user(perm))

    response = _request(api_client, method, url, body, mirror)

    assert response.status_code == ok, response.content


def test_stop_without_stop_permission_is_forbidden(api_client, make_user, channel):
    mirror = MirrorFactory(channel=channel)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)
    api_client.force_authenticate(
        make_user(*[p for p in CHANNEL_MIRROR_PERMS if p != "mirrors_app.stop_mirror"])
    )

    response = api_client.post(f"/api/mirrors/{mirror.pk}/stop/")

    assert response.status_code == 403
    run.refresh_from_db()
    assert run.state == SyncRun.State.RUNNING


def test_stop_with_stop_permission_succeeds(api_client, make_user, channel):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)
    api_client.force_authenticate(make_user("mirrors_app.stop_mirror"))

    response = api_client.post(f"/api/mirrors/{mirror.pk}/stop/")

    assert response.status_code == 202


def test_listing_all_mirrors_without_view_all_permission_is_forbidden_with_a_message(
    api_client, make_user, channel
):
    MirrorFactory(channel=channel)
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))

    response = api_client.get("/api/mirrors/")

    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "view all mirrors" in detail
    assert "?channel=" in detail


def test_listing_all_mirrors_with_view_all_permission_shows_every_channel(
    api_client, make_user, channel
):
    MirrorFactory(channel=channel, name="one")
    MirrorFactory(channel=ChannelFactory(name="other"), name="two")
    api_client.force_authenticate(
        make_user("mirrors_app.view_mirror", "mirrors_app.view_all_mirrors")
    )

    response = api_client.get("/api/mirrors/")

    assert response.status_code == 200
    assert {m["name"] for m in response.json()["results"]} == {"one", "two"}


def test_view_all_mirrors_alone_does_not_grant_reading_mirrors(api_client, make_user, channel):
    MirrorFactory(channel=channel)
    api_client.force_authenticate(make_user("mirrors_app.view_all_mirrors"))

    assert api_client.get("/api/mirrors/").status_code == 403


def test_listing_one_channels_mirrors_needs_only_view_mirror(api_client, make_user, channel):
    MirrorFactory(channel=channel, name="mine")
    MirrorFactory(channel=ChannelFactory(name="other"), name="theirs")
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))

    response = api_client.get("/api/mirrors/?channel=main")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert body["results"][0]["name"] == "mine"
    assert body["results"][0]["channel"] == "main"


def test_listing_a_subchannels_mirrors_by_path_needs_only_view_subchannel_mirror(
    api_client, make_user, channel
):
    staging = ChannelFactory(name="staging", parent=channel)
    ChannelFactory(name="staging")  # a top-level channel with the same name
    MirrorFactory(channel=channel, name="parent-mirror")
    MirrorFactory(channel=staging, name="sub-mirror")
    api_client.force_authenticate(make_user("mirrors_app.view_subchannel_mirror"))

    response = api_client.get("/api/mirrors/?channel=main/staging")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [m["name"] for m in results] == ["sub-mirror"]
    assert results[0]["channel"] == "main/staging"


def test_listing_by_channel_does_not_include_its_subchannels_mirrors(
    api_client, make_user, channel
):
    MirrorFactory(channel=channel, name="parent-mirror")
    MirrorFactory(channel=ChannelFactory(name="staging", parent=channel), name="sub-mirror")
    api_client.force_authenticate(
        make_user("mirrors_app.view_mirror", "mirrors_app.view_subchannel_mirror")
    )

    response = api_client.get("/api/mirrors/?channel=main")

    assert [m["name"] for m in response.json()["results"]] == ["parent-mirror"]


def test_listing_an_unknown_channel_is_empty(api_client, make_user):
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))

    response = api_client.get("/api/mirrors/?channel=nope")

    assert response.status_code == 200
    assert response.json()["count"] == 0


# --- create ------------------------------------------------------------------------------------


def test_create_mirror_returns_it_with_defaults(admin_client, channel, conda_upstream):
    response = create(admin_client, source_url=conda_upstream.url)  # a real channel: no warning

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["channel"] == "main"
    assert body["name"] == "conda-forge"
    assert body["mode"] == "passive"
    assert body["kind"] == "conda"
    assert body["cron"] == "0 0 1 * *"
    assert body["status"] == "scheduled"
    assert body["active_run"] is None
    assert body["warnings"] == []
    assert "run_now" not in body
    mirror = Mirror.objects.get(pk=body["id"])
    assert mirror.channel == channel
    assert mirror.source_url == conda_upstream.url
    assert mirror.cron == "0 0 1 * *"
    assert mirror.created_by.username == "admin"
    assert not SyncRun.objects.exists()


def test_create_mirror_in_subchannel_by_path(admin_client, channel):
    staging = ChannelFactory(name="staging", parent=channel)

    response = create(admin_client, channel="main/staging")

    assert response.status_code == 201, response.json()
    assert response.json()["channel"] == "main/staging"
    assert Mirror.objects.get().channel == staging


def test_create_mirror_in_active_mode(admin_client, channel):
    response = create(admin_client, mode="active")

    assert response.status_code == 201
    assert Mirror.objects.get().mode == Mirror.Mode.ACTIVE


@pytest.mark.parametrize("path", ["nope", "main/nope", "nope/staging"])
def test_create_mirror_in_unknown_channel_is_rejected(admin_client, channel, path):
    response = create(admin_client, channel=path)

    assert response.status_code == 400
    assert "does not exist" in str(response.json()["channel"])
    assert not Mirror.objects.exists()


def test_create_mirror_without_channel_is_rejected_on_channel(admin_client, channel):
    body = mirror_body()
    del body["channel"]

    response = admin_client.post("/api/mirrors/", body, format="json")

    assert response.status_code == 400
    assert "channel" in response.json()


def test_create_mirror_whose_type_does_not_match_the_channel_is_rejected_on_kind(
    admin_client, channel
):
    response = create(admin_client, kind="pypi")

    assert response.status_code == 400
    assert "does not match" in str(response.json()["kind"])
    assert not Mirror.objects.exists()


def test_create_mirror_with_unknown_type_is_rejected_on_kind(admin_client, channel):
    response = create(admin_client, kind="npm")

    assert response.status_code == 400
    assert "kind" in response.json()


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "0 0 * *", "@sometimes"])
def test_create_mirror_with_bad_cron_is_rejected_on_cron(admin_client, channel, cron):
    response = create(admin_client, cron=cron)

    assert response.status_code == 400
    assert "cron" in response.json()
    assert not Mirror.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="mirror-").exists()


@pytest.mark.parametrize(
    ("preset", "cron"),
    [("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0"), ("@yearly", "0 0 1 1 *")],
)
def test_create_mirror_normalises_cron_presets(admin_client, channel, preset, cron):
    response = create(admin_client, cron=preset)

    assert response.status_code == 201, response.json()
    assert response.json()["cron"] == cron
    assert Mirror.objects.get().cron == cron


def test_create_mirror_with_policy_of_its_channel_is_rejected_on_policy(admin_client, channel):
    policy = PolicyFactory(name="strict")
    channel.policy = policy
    channel.save()

    response = create(admin_client, policy=policy.pk)

    assert response.status_code == 400
    assert "already applied to channel" in str(response.json()["policy"])
    assert not Mirror.objects.exists()


def test_create_mirror_with_its_own_policy(admin_client, channel):
    channel.policy = PolicyFactory(name="channel-policy")
    channel.save()
    own = PolicyFactory(name="mirror-policy")

    response = create(admin_client, policy=own.pk)

    assert response.status_code == 201
    assert response.json()["policy"] == own.pk


def test_create_mirror_from_host_off_the_allowlist_is_rejected_on_source_url(
    admin_client, channel, outside
):
    response = create(admin_client, source_url=outside.url + "/x")

    assert response.status_code == 400
    assert "allowlist" in str(response.json()["source_url"])
    assert not Mirror.objects.exists()
    assert outside.requests == []


def test_create_mirror_with_invalid_url_is_rejected_on_source_url(admin_client, channel):
    response = create(admin_client, source_url="not a url")

    assert response.status_code == 400
    assert "source_url" in response.json()


def test_create_mirror_with_unknown_options_is_rejected_on_options(admin_client, channel):
    response = create(admin_client, options={"flavour": "vanilla"})

    assert response.status_code == 400
    assert "options" in response.json()


def test_create_mirror_normalises_options(admin_client, channel):
    response = create(admin_client, options={"subdirs": ["linux-64"]})

    assert response.status_code == 201
    assert response.json()["options"] == {"subdirs": ["linux-64", "noarch"]}


def test_duplicate_mirror_name_in_a_channel_is_rejected(admin_client, channel):
    MirrorFactory(channel=channel, name="conda-forge")

    response = create(admin_client, name="conda-forge")

    assert response.status_code == 400
    assert "already has a mirror with this name" in str(response.json())
    assert Mirror.objects.count() == 1


def test_same_mirror_name_in_another_channel_is_allowed(admin_client, channel):
    MirrorFactory(channel=ChannelFactory(name="other"), name="conda-forge")

    assert create(admin_client, name="conda-forge").status_code == 201


def test_second_mirror_in_a_channel_is_saved_with_a_warning(admin_client, channel, conda_upstream):
    MirrorFactory(channel=channel, name="first")

    response = create(admin_client, name="second", source_url=conda_upstream.url)

    assert response.status_code == 201
    warnings = response.json()["warnings"]
    assert len(warnings) == 1
    assert "more than one mirror" in warnings[0]


def test_schedule_more_often_than_daily_is_saved_with_a_warning(admin_client, channel):
    response = create(admin_client, cron="*/30 * * * *")

    assert response.status_code == 201
    assert response.json()["cron"] == "*/30 * * * *"
    assert any("more often than daily" in w for w in response.json()["warnings"])


def test_full_pypi_mirror_is_saved_with_a_yearly_schedule_warning(admin_client, settings, resolver):
    settings.PSM_UPSTREAM_ALLOWLIST = ["pypi.org"]
    ChannelFactory(name="py", kind="pypi")
    # Nothing may leave the machine: pypi.org resolves to an address PSM refuses to connect to.
    resolver.answers["pypi.org"] = ["10.0.0.1"]

    response = create(
        admin_client, channel="py", kind="pypi", source_url="https://pypi.org/simple/"
    )

    assert response.status_code == 201, response.json()
    assert any("once yearly" in w for w in response.json()["warnings"])
    assert any("could not check the source" in w for w in response.json()["warnings"])
    assert resolver.asked == ["pypi.org"]


def test_create_mirror_schedules_it(admin_client, channel):
    response = create(admin_client, cron="@daily")

    mirror_id = response.json()["id"]
    task = PeriodicTask.objects.get(name=f"mirror-{mirror_id}")
    assert task.task == "mirrors.sync_mirror"
    assert task.enabled
    assert task.crontab.minute == "0"
    assert task.crontab.hour == "0"
    assert task.crontab.day_of_month == "*"
    assert json.loads(task.kwargs) == {"mirror_id": mirror_id}


def test_create_mirror_with_run_now_queues_a_run(
    admin_client, channel, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = create(admin_client, run_now=True)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued"
    assert body["active_run"]["state"] == "queued"
    assert body["active_run"]["trigger"] == "manual"
    assert body["active_run"]["requested_by"] == "admin"
    run = SyncRun.objects.get()
    assert run.mirror_id == body["id"]
    assert body["active_run"]["id"] == run.pk
    assert len(callbacks) == 1


def test_create_mirror_with_run_now_sends_the_task_after_commit(
    admin_client, channel, django_capture_on_commit_callbacks
):
    with (
        mock.patch("mirrors_app.tasks.sync_mirror.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = create(admin_client, run_now=True)

    run = SyncRun.objects.get()
    delay.assert_called_once_with(mirror_id=response.json()["id"], run_id=run.pk)


def test_create_mirror_with_run_now_false_queues_nothing(
    admin_client, channel, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = create(admin_client, run_now=False)

    assert response.status_code == 201
    assert response.json()["active_run"] is None
    assert not SyncRun.objects.exists()
    assert callbacks == []


def test_create_mirror_cannot_set_status(admin_client, channel):
    response = create(admin_client, status="completed", last_synced_at="2024-01-01T00:00:00Z")

    assert response.status_code == 201
    mirror = Mirror.objects.get()
    assert mirror.status == Mirror.Status.SCHEDULED
    assert mirror.last_synced_at is None


# --- retrieve / update -------------------------------------------------------------------------


def test_retrieve_mirror(admin_client, channel):
    mirror = MirrorFactory(channel=channel, name="m", cron="0 3 * * *")

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == mirror.pk
    assert body["channel"] == "main"
    assert body["cron"] == "0 3 * * *"
    assert body["active_run"] is None


def test_retrieve_mirror_shows_its_active_run(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING, total=200, seen=50)

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/")

    active = response.json()["active_run"]
    assert active["id"] == run.pk
    assert active["state"] == "running"
    assert active["progress"] == 25


def test_retrieve_unknown_mirror_is_404(admin_client):
    assert admin_client.get("/api/mirrors/999999/").status_code == 404


def test_patch_mirror_updates_cron_and_its_schedule(admin_client, channel):
    mirror = MirrorFactory(channel=channel, cron="0 0 1 * *")

    response = admin_client.patch(f"/api/mirrors/{mirror.pk}/", {"cron": "@weekly"}, format="json")

    assert response.status_code == 200
    assert response.json()["cron"] == "0 0 * * 0"
    mirror.refresh_from_db()
    assert mirror.cron == "0 0 * * 0"
    task = PeriodicTask.objects.get(name=f"mirror-{mirror.pk}")
    assert task.crontab.day_of_week == "0"
    assert task.crontab.day_of_month == "*"


def test_patch_mirror_with_bad_cron_is_rejected_on_cron(admin_client, channel):
    mirror = MirrorFactory(channel=channel, cron="0 0 1 * *")

    response = admin_client.patch(
        f"/api/mirrors/{mirror.pk}/", {"cron": "every day"}, format="json"
    )

    assert response.status_code == 400
    assert "cron" in response.json()
    mirror.refresh_from_db()
    assert mirror.cron == "0 0 1 * *"


def test_patch_mirror_cannot_change_mode(admin_client, channel):
    mirror = MirrorFactory(channel=channel, mode=Mirror.Mode.PASSIVE)

    response = admin_client.patch(f"/api/mirrors/{mirror.pk}/", {"mode": "active"}, format="json")

    assert response.status_code == 400
    assert "cannot be changed" in str(response.json()["mode"])
    mirror.refresh_from_db()
    assert mirror.mode == Mirror.Mode.PASSIVE


def test_patch_mirror_with_its_current_mode_is_accepted(admin_client, channel):
    mirror = MirrorFactory(channel=channel, mode=Mirror.Mode.ACTIVE)

    response = admin_client.patch(
        f"/api/mirrors/{mirror.pk}/", {"mode": "active", "name": "renamed"}, format="json"
    )

    assert response.status_code == 200
    mirror.refresh_from_db()
    assert mirror.name == "renamed"


def test_patch_mirror_policy_to_its_channels_policy_is_rejected_on_policy(admin_client, channel):
    policy = PolicyFactory()
    channel.policy = policy
    channel.save()
    mirror = MirrorFactory(channel=channel)

    response = admin_client.patch(
        f"/api/mirrors/{mirror.pk}/", {"policy": policy.pk}, format="json"
    )

    assert response.status_code == 400
    assert "policy" in response.json()
    mirror.refresh_from_db()
    assert mirror.policy is None


def test_patch_mirror_source_off_the_allowlist_is_rejected_on_source_url(admin_client, channel):
    mirror = MirrorFactory(channel=channel)

    response = admin_client.patch(
        f"/api/mirrors/{mirror.pk}/", {"source_url": "http://example.com/x"}, format="json"
    )

    assert response.status_code == 400
    assert "source_url" in response.json()
    mirror.refresh_from_db()
    assert mirror.source_url == SOURCE


def test_patch_mirror_to_name_taken_in_its_channel_is_rejected(admin_client, channel):
    MirrorFactory(channel=channel, name="taken")
    mirror = MirrorFactory(channel=channel, name="mine")

    response = admin_client.patch(f"/api/mirrors/{mirror.pk}/", {"name": "taken"}, format="json")

    assert response.status_code == 400
    mirror.refresh_from_db()
    assert mirror.name == "mine"


def test_patch_mirror_with_run_now_while_a_run_is_active_still_saves_the_settings(
    admin_client, channel, no_broker
):
    mirror = MirrorFactory(channel=channel, cron="0 0 1 * *")
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)

    response = admin_client.patch(
        f"/api/mirrors/{mirror.pk}/", {"cron": "@daily", "run_now": True}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["active_run"]["id"] == run.pk
    assert Mirror.objects.get().cron == "0 0 * * *"
    assert PeriodicTask.objects.get(name=f"mirror-{mirror.pk}").crontab.day_of_month == "*"
    assert list(SyncRun.objects.all()) == [run]


def test_patch_mirror_with_run_now_queues_a_run(
    admin_client, channel, django_capture_on_commit_callbacks
):
    mirror = MirrorFactory(channel=channel)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.patch(
            f"/api/mirrors/{mirror.pk}/", {"run_now": True}, format="json"
        )

    assert response.status_code == 200
    run = SyncRun.objects.get()
    assert run.state == SyncRun.State.QUEUED
    assert response.json()["status"] == "queued"
    assert response.json()["active_run"]["id"] == run.pk
    assert len(callbacks) == 1


# --- commands: run, stop, restart --------------------------------------------------------------


def test_run_queues_a_manual_run(admin_client, channel, django_capture_on_commit_callbacks):
    mirror = MirrorFactory(channel=channel)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/api/mirrors/{mirror.pk}/run/")

    assert response.status_code == 202
    body = response.json()
    run = SyncRun.objects.get()
    assert body["id"] == run.pk
    assert body["mirror"] == mirror.pk
    assert body["state"] == "queued"
    assert body["trigger"] == "manual"
    assert body["requested_by"] == "admin"
    mirror.refresh_from_db()
    assert mirror.status == Mirror.Status.QUEUED
    assert len(callbacks) == 1


def test_run_sends_the_sync_task_for_that_run(
    admin_client, channel, django_capture_on_commit_callbacks
):
    mirror = MirrorFactory(channel=channel)

    with (
        mock.patch("mirrors_app.tasks.sync_mirror.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(f"/api/mirrors/{mirror.pk}/run/")

    delay.assert_called_once_with(mirror_id=mirror.pk, run_id=response.json()["id"])


def test_run_while_a_run_is_queued_is_a_conflict(
    admin_client, channel, django_capture_on_commit_callbacks
):
    mirror = MirrorFactory(channel=channel, name="cf")
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = admin_client.post(f"/api/mirrors/{mirror.pk}/run/")

    with django_capture_on_commit_callbacks() as second_callbacks:
        second = admin_client.post(f"/api/mirrors/{mirror.pk}/run/")

    assert second.status_code == 409
    detail = second.json()["detail"]
    assert "already has a run in progress" in detail
    assert f"#{first.json()['id']}" in detail
    assert SyncRun.objects.count() == 1
    assert len(first_callbacks) == 1
    assert second_callbacks == []


@pytest.mark.parametrize("state", [SyncRun.State.RUNNING, SyncRun.State.STOPPING])
def test_run_while_a_run_is_active_is_a_conflict(
    admin_client, channel, django_capture_on_commit_callbacks, state
):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=state)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/api/mirrors/{mirror.pk}/run/")

    assert response.status_code == 409
    assert "in progress" in response.json()["detail"]
    assert callbacks == []


def test_run_after_a_finished_run_is_accepted(admin_client, channel, no_broker):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)

    response = admin_client.post(f"/api/mirrors/{mirror.pk}/run/")

    assert response.status_code == 202
    assert SyncRun.objects.count() == 2


def test_run_unknown_mirror_is_404(admin_client, no_broker):
    assert admin_client.post("/api/mirrors/999999/run/").status_code == 404


def test_run_is_post_only(admin_client, channel, no_broker):
    mirror = MirrorFactory(channel=channel)

    assert admin_client.get(f"/api/mirrors/{mirror.pk}/run/").status_code == 405
    assert not SyncRun.objects.exists()


def test_stop_queued_run_stops_it(admin_client, channel, no_broker):
    mirror = MirrorFactory(channel=channel)
    run_id = admin_client.post(f"/api/mirrors/{mirror.pk}/run/").json()["id"]

    response = admin_client.post(f"/api/mirrors/{mirror.pk}/stop/")

    assert response.status_code == 202
    assert response.json()["id"] == run_id
    assert response.json()["state"] == "stopped"
    run = SyncRun.objects.get(pk=run_id)
    assert run.state == SyncRun.State.STOPPED
    assert run.finished_at is not None
    mirror.refresh_from_db()
    assert mirror.status == Mirror.Status.STOPPED


def test_stop_running_run_asks_it_to_stop(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)

    response = admin_client.post(f"/api/mirrors/{mirror.pk}/stop/")

    assert response.status_code == 202
    assert response.json()["state"] == "stopping"
    run.refresh_from_db()
    assert run.state == SyncRun.State.STOPPING


def test_stop_with_nothing_running_is_a_conflict(admin_client, channel):
    mirror = MirrorFactory(channel=channel, name="idle")
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)

    response = admin_client.post(f"/api/mirrors/{mirror.pk}/stop/")

    assert response.status_code == 409
    assert "'idle' is not running" in response.json()["detail"]


def test_restart_queues_a_restart_run(admin_client, channel, django_capture_on_commit_callbacks):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.STOPPED)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/api/mirrors/{mirror.pk}/restart/")

    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "queued"
    assert body["trigger"] == "restart"
    assert SyncRun.objects.get(pk=body["id"]).trigger == SyncRun.Trigger.RESTART
    assert len(callbacks) == 1


def test_restart_while_a_run_is_active_is_a_conflict(
    admin_client, channel, django_capture_on_commit_callbacks
):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/api/mirrors/{mirror.pk}/restart/")

    assert response.status_code == 409
    assert "in progress" in response.json()["detail"]
    assert callbacks == []


def test_run_of_a_mirror_in_another_channel_needs_no_view_all_permission(
    api_client, make_user, no_broker
):
    mirror = MirrorFactory(channel=ChannelFactory(name="elsewhere"))
    api_client.force_authenticate(make_user("mirrors_app.run_mirror"))

    response = api_client.post(f"/api/mirrors/{mirror.pk}/run/")

    assert response.status_code == 202


# --- details -----------------------------------------------------------------------------------


def _package(mirror, filename: str, *, stored: bool) -> Package:
    artifact = None
    if stored:
        sha = filename.encode().hex().ljust(64, "0")[:64]
        artifact = Artifact.objects.create(sha256=sha, size=10)
    return Package.objects.create(
        channel=mirror.channel,
        mirror=mirror,
        unit="noarch",
        filename=filename,
        name=filename.split("-")[0],
        version="1.0",
        artifact=artifact,
        on_demand=not stored,
    )


def test_details_count_active_and_passive_packages(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    other = MirrorFactory(channel=channel)
    _package(mirror, "a-1.0-0.conda", stored=True)
    _package(mirror, "b-1.0-0.conda", stored=True)
    _package(mirror, "c-1.0-0.conda", stored=False)
    _package(other, "d-1.0-0.conda", stored=True)

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/details/")

    assert response.status_code == 200
    body = response.json()
    assert body["packages_active"] == 2
    assert body["packages_passive"] == 1
    assert body["mirror"]["id"] == mirror.pk


def test_details_show_latest_run_with_filtered_reasons(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED, filtered=1)
    latest = SyncRunFactory(
        mirror=mirror,
        state=SyncRun.State.COMPLETED,
        filtered=5,
        filtered_reasons={"license": 3, "subdir": 2},
    )

    body = admin_client.get(f"/api/mirrors/{mirror.pk}/details/").json()

    assert body["latest_run"]["id"] == latest.pk
    assert body["latest_run"]["filtered"] == 5
    assert body["latest_run"]["filtered_reasons"] == {"license": 3, "subdir": 2}


def test_details_latest_run_ignores_skipped_runs(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    completed = SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.SKIPPED)

    body = admin_client.get(f"/api/mirrors/{mirror.pk}/details/").json()

    assert body["latest_run"]["id"] == completed.pk


def test_details_of_a_mirror_never_run(admin_client, channel):
    mirror = MirrorFactory(channel=channel, name="fresh")

    body = admin_client.get(f"/api/mirrors/{mirror.pk}/details/").json()

    assert body["latest_run"] is None
    assert body["packages_active"] == 0
    assert body["packages_passive"] == 0
    assert body["effective_policy"] is None
    assert body["policy_source"] == "none"
    assert "has no policy" in body["dependency_report"]
    assert "'fresh'" in body["dependency_report"]


def test_details_show_policy_inherited_from_channel(admin_client, channel):
    channel.policy = PolicyFactory(name="channel-policy")
    channel.save()
    mirror = MirrorFactory(channel=channel)

    body = admin_client.get(f"/api/mirrors/{mirror.pk}/details/").json()

    assert body["effective_policy"] == "channel-policy"
    assert body["policy_source"] == "channel"
    assert "'channel-policy'" in body["dependency_report"]
    assert "no dependency report" in body["dependency_report"]


def test_details_show_mirror_policy_replacing_channel_policy(admin_client, channel):
    channel.policy = PolicyFactory(name="channel-policy")
    channel.save()
    mirror = MirrorFactory(channel=channel, policy=PolicyFactory(name="mirror-policy"))

    body = admin_client.get(f"/api/mirrors/{mirror.pk}/details/").json()

    assert body["effective_policy"] == "mirror-policy"
    assert body["policy_source"] == "mirror"


def test_details_of_unknown_mirror_is_404(admin_client):
    assert admin_client.get("/api/mirrors/999999/details/").status_code == 404


# --- applied policy, excluded packages, explain, dependency report, policy preview/apply -------
# (with real syncs in test_policy_views.py)


def test_mirror_shows_its_applied_policy_and_where_it_comes_from(admin_client, channel):
    bare = MirrorFactory(channel=channel)
    channel_policy = PolicyFactory(name="channel-policy")
    inherits = MirrorFactory(channel=ChannelFactory(policy=channel_policy))
    own = MirrorFactory(
        channel=ChannelFactory(policy=channel_policy), policy=PolicyFactory(name="own")
    )

    def applied(mirror):
        return admin_client.get(f"/api/mirrors/{mirror.pk}/").json()["applied_policy"]

    assert applied(bare) == {"id": None, "name": None, "source": "none"}
    assert applied(inherits) == {
        "id": channel_policy.pk,
        "name": "channel-policy",
        "source": "channel",
    }
    assert applied(own) == {"id": own.policy_id, "name": "own", "source": "mirror"}


def test_created_mirror_shows_its_applied_policy(admin_client, channel, no_broker):
    channel.policy = PolicyFactory(name="channel-policy")
    channel.save()

    response = create(admin_client)

    assert response.status_code == 201
    assert response.json()["applied_policy"]["source"] == "channel"


def test_excluded_packages_of_a_mirror(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    _package(mirror, "a-1.0-0.conda", stored=True)
    Package.objects.filter(mirror=mirror).update(excluded_reason="blocked by package rule 'a'")
    _package(mirror, "b-1.0-0.conda", stored=True)

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/excluded/")

    assert response.status_code == 200
    assert response.json() == [
        {
            "path": "noarch/a-1.0-0.conda",
            "name": "a",
            "version": "1.0",
            "reason": "blocked by package rule 'a'",
        }
    ]


def test_excluded_packages_of_a_mirror_with_none_as_csv(admin_client, channel):
    mirror = MirrorFactory(channel=channel)

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/excluded/", {"format": "csv"})

    assert response.status_code == 200
    assert response.content.decode().splitlines() == ["path,name,version,reason"]


def test_csv_file_name_is_made_safe(admin_client, channel):
    mirror = MirrorFactory(channel=channel, name='my "forge"/x')

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/excluded/", {"format": "csv"})

    assert response["Content-Disposition"] == 'attachment; filename="main-my_forge_x-excluded.csv"'


@pytest.mark.parametrize("query", [{}, {"package": ""}, {"package": "  "}])
def test_explain_without_package_is_rejected(admin_client, channel, query):
    mirror = MirrorFactory(channel=channel)

    response = admin_client.get(f"/api/mirrors/{mirror.pk}/explain/", query)

    assert response.status_code == 400
    assert response.json() == {"package": ["Give a package name or a file name."]}


def test_explain_needs_view_permission(api_client, make_user, channel):
    mirror = MirrorFactory(channel=channel)
    api_client.force_authenticate(make_user("mirrors_app.change_mirror"))

    assert api_client.get(f"/api/mirrors/{mirror.pk}/explain/", {"package": "a"}).status_code == 403


def test_dependency_report_without_a_policy_is_404_with_the_reason(api_client, make_user, channel):
    mirror = MirrorFactory(channel=channel, name="bare")
    perms = ("mirrors_app.view_mirror", "mirrors_app.download_dependency_report")
    api_client.force_authenticate(make_user(*perms))

    response = api_client.get(f"/api/mirrors/{mirror.pk}/dependency-report/")

    assert response.status_code == 404
    assert "Mirror 'bare' has no policy" in response.json()["detail"]


def test_csv_is_not_offered_where_there_is_no_csv(admin_client, channel):
    mirror = MirrorFactory(channel=channel)

    response = admin_client.get(
        f"/api/mirrors/{mirror.pk}/explain/", {"package": "a", "format": "csv"}
    )

    assert response.status_code == 404


def test_policy_preview_of_a_mirror_without_packages(admin_client, channel):
    mirror = MirrorFactory(channel=channel)

    response = admin_client.post(f"/api/mirrors/{mirror.pk}/policy-preview/")

    assert response.status_code == 200
    assert response.json() == {
        "allowed": 0,
        "excluded": 0,
        "entering": 0,
        "leaving": 0,
        "entering_packages": [],
        "leaving_packages": [],
        "excluded_by_reason": {},
    }


@pytest.mark.parametrize(
    "url",
    [
        "/api/mirrors/999999/excluded/",
        "/api/mirrors/999999/explain/?package=a",
        "/api/mirrors/999999/policy-preview/",
        "/api/mirrors/999999/policy-apply/",
    ],
)
def test_reports_and_policy_commands_of_unknown_mirror_are_404(admin_client, url):
    method = admin_client.post if "policy-" in url else admin_client.get
    assert method(url).status_code == 404


@pytest.mark.parametrize("command", ["policy-preview", "policy-apply"])
def test_policy_commands_need_change_permission(api_client, make_user, channel, command):
    mirror = MirrorFactory(channel=channel)
    others = [p for p in CHANNEL_MIRROR_PERMS if p != "mirrors_app.change_mirror"]
    api_client.force_authenticate(make_user(*others))

    assert api_client.post(f"/api/mirrors/{mirror.pk}/{command}/").status_code == 403


@pytest.mark.parametrize("command", ["policy-preview", "policy-apply"])
def test_policy_commands_need_view_permission(api_client, make_user, channel, command):
    mirror = MirrorFactory(channel=channel)
    api_client.force_authenticate(make_user("mirrors_app.change_mirror"))

    assert api_client.post(f"/api/mirrors/{mirror.pk}/{command}/").status_code == 403


# --- delete ------------------------------------------------------------------------------------


def test_delete_mirror_removes_it_and_its_schedule_but_keeps_packages(admin_client, channel):
    mirror_id = create(admin_client).json()["id"]
    mirror = Mirror.objects.get(pk=mirror_id)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    _package(mirror, "a-1.0-0.conda", stored=True)
    _package(mirror, "b-1.0-0.conda", stored=False)
    assert PeriodicTask.objects.filter(name=f"mirror-{mirror_id}").exists()

    response = admin_client.delete(f"/api/mirrors/{mirror_id}/")

    assert response.status_code == 204
    assert not Mirror.objects.filter(pk=mirror_id).exists()
    assert not PeriodicTask.objects.filter(name=f"mirror-{mirror_id}").exists()
    assert not SyncRun.objects.exists()
    packages = Package.objects.filter(channel=channel)
    assert packages.count() == 2
    assert set(packages.values_list("mirror", flat=True)) == {None}


@pytest.mark.parametrize("flag", ["true", "1"])
def test_delete_mirror_with_packages_removes_its_packages(admin_client, channel, flag):
    mirror_id = create(admin_client).json()["id"]
    mirror = Mirror.objects.get(pk=mirror_id)
    other = MirrorFactory(channel=channel)
    _package(mirror, "a-1.0-0.conda", stored=True)
    _package(mirror, "b-1.0-0.conda", stored=False)
    _package(other, "c-1.0-0.conda", stored=False)

    response = admin_client.delete(f"/api/mirrors/{mirror_id}/?with_packages={flag}")

    assert response.status_code == 204
    assert not Mirror.objects.filter(pk=mirror_id).exists()
    assert not PeriodicTask.objects.filter(name=f"mirror-{mirror_id}").exists()
    served = Package.objects.filter(removed=False)
    assert list(served.values_list("filename", flat=True)) == ["c-1.0-0.conda"]


def test_delete_mirror_with_packages_false_keeps_packages(admin_client, channel):
    mirror = MirrorFactory(channel=channel)
    _package(mirror, "a-1.0-0.conda", stored=False)

    response = admin_client.delete(f"/api/mirrors/{mirror.pk}/?with_packages=false")

    assert response.status_code == 204
    assert Package.objects.count() == 1


def test_delete_unknown_mirror_is_404(admin_client):
    assert admin_client.delete("/api/mirrors/999999/").status_code == 404


# --- runs --------------------------------------------------------------------------------------


@pytest.fixture
def runs_client(api_client, make_user):
    api_client.force_authenticate(make_user("mirrors_app.view_syncrun", "mirrors_app.view_mirror"))
    return api_client


def test_runs_list_shows_runs_newest_first(runs_client, channel):
    mirror = MirrorFactory(channel=channel)
    old = SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    new = SyncRunFactory(mirror=mirror, state=SyncRun.State.QUEUED)

    response = runs_client.get("/api/runs/")

    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [new.pk, old.pk]


def test_runs_filter_by_mirror(runs_client, channel):
    mine = MirrorFactory(channel=channel)
    other = MirrorFactory(channel=channel)
    run = SyncRunFactory(mirror=mine)
    SyncRunFactory(mirror=other)

    response = runs_client.get(f"/api/runs/?mirror={mine.pk}")

    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [run.pk]


def test_runs_filter_with_non_numeric_mirror_is_rejected(runs_client):
    response = runs_client.get("/api/runs/?mirror=abc")

    assert response.status_code == 400
    assert "mirror" in response.json()


def test_retrieve_run(runs_client, channel):
    run = SyncRunFactory(
        mirror=MirrorFactory(channel=channel),
        state=SyncRun.State.FAILED,
        error="boom",
        filtered_reasons={"license": 1},
    )

    response = runs_client.get(f"/api/runs/{run.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "failed"
    assert body["error"] == "boom"
    assert body["filtered_reasons"] == {"license": 1}
    assert body["progress"] is None


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_runs_are_read_only(api_client, make_user, channel, method):
    user = make_user()
    user.is_superuser = True
    user.save()
    api_client.force_authenticate(user)
    run = SyncRunFactory(mirror=MirrorFactory(channel=channel))
    url = "/api/runs/" if method == "post" else f"/api/runs/{run.pk}/"

    response = getattr(api_client, method)(url, {"state": "completed"}, format="json")

    assert response.status_code == 405
    run.refresh_from_db()
    assert run.state == SyncRun.State.QUEUED


def test_runs_need_view_permission(api_client, make_user):
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))

    assert api_client.get("/api/runs/").status_code == 403

"""The mirrors admin: All Mirrors, its actions, per-mirror commands and details, the mirror form,
and the read-only runs admin.

No broker runs for these tests: every path that queues a run is wrapped in
`django_capture_on_commit_callbacks(execute=False)`, so `sync_mirror.delay` is never called.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from channels_app.models import Artifact, Package
from mirrors_app import schedules
from mirrors_app.models import Mirror, SyncRun
from tests.factories import (
    ChannelFactory,
    MirrorFactory,
    PolicyFactory,
    SyncRunFactory,
)

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:mirrors_app_mirror_changelist")
ADD = reverse("admin:mirrors_app_mirror_add")
SOURCE = "http://127.0.0.1:9/conda-forge"  # validated only: nothing is fetched from it

VIEW_ALL = ("mirrors_app.view_mirror", "mirrors_app.view_all_mirrors")
COMMAND_PERMS = (
    "mirrors_app.run_mirror",
    "mirrors_app.stop_mirror",
    "mirrors_app.restart_mirror",
)
MANAGER_PERMS = (
    *VIEW_ALL,
    *COMMAND_PERMS,
    "mirrors_app.delete_mirror",
    "mirrors_app.download_dependency_report",
)
EDITOR_PERMS = (
    *VIEW_ALL,
    "mirrors_app.add_mirror",
    "mirrors_app.change_mirror",
    "mirrors_app.run_mirror",
)


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def texts_of(response) -> list[str]:
    return [text for _, text in messages_of(response)]


def action_names(response) -> set[str]:
    form = response.context["action_form"]  # None when no action at all is available
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def post_action(client, action: str, *mirrors, **extra):
    data = {"action": action, "index": "0", ACTION_CHECKBOX_NAME: [m.pk for m in mirrors]}
    return client.post(CHANGELIST, data | extra)


def command_url(name: str, mirror: Mirror) -> str:
    return reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk])


def change_url(mirror: Mirror) -> str:
    return reverse("admin:mirrors_app_mirror_change", args=[mirror.pk])


@pytest.fixture
def manager(make_user, client):
    user = make_user(*MANAGER_PERMS, username="manager")
    client.force_login(user)
    return user


@pytest.fixture
def editor(make_user, client):
    user = make_user(*EDITOR_PERMS, username="editor")
    client.force_login(user)
    return user


# --- All Mirrors: access, title, search, sorting, status ----------------------------------


def test_all_mirrors_needs_the_view_all_permission(client, make_user):
    MirrorFactory()
    client.force_login(make_user("mirrors_app.view_mirror", "mirrors_app.change_mirror"))

    assert client.get(CHANGELIST).status_code == 403
    # ... and the index does not offer the link.
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert CHANGELIST not in index.content.decode()


def test_all_mirrors_is_titled_and_linked_from_the_index(client, make_user):
    MirrorFactory()
    client.force_login(make_user(*VIEW_ALL))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert response.context["title"] == "All Mirrors"
    assert "<h1>All Mirrors</h1>" in response.content.decode()
    assert CHANGELIST in client.get(reverse("admin:index")).content.decode()


def test_all_mirrors_lists_mirrors_of_every_channel(client, make_user):
    MirrorFactory(name="forge", channel=ChannelFactory(name="a"))
    MirrorFactory(name="pypi", channel=ChannelFactory(name="b", kind="pypi"))
    client.force_login(make_user(*VIEW_ALL))

    html = client.get(CHANGELIST).content.decode()

    assert "forge" in html and "pypi" in html
    assert "standard python" in html  # the Type column shows the format's label


def test_all_mirrors_search_by_name(client, make_user):
    MirrorFactory(name="conda-forge")
    MirrorFactory(name="bioconda", source_url="http://127.0.0.1:9/bioconda")
    client.force_login(make_user(*VIEW_ALL))

    response = client.get(CHANGELIST, {"q": "forge"})

    assert response.status_code == 200
    assert [m.name for m in response.context["cl"].result_list] == ["conda-forge"]


def _column(response, name: str) -> int:
    return list(response.context["cl"].list_display).index(name)


def _names(response) -> list[str]:
    return [m.name for m in response.context["cl"].result_list]


def test_all_mirrors_sorts_by_status_and_last_updated(client, make_user):
    now = timezone.now()
    MirrorFactory(name="m1", status=Mirror.Status.FAILED, last_synced_at=now - timedelta(days=1))
    MirrorFactory(name="m2", status=Mirror.Status.COMPLETED, last_synced_at=now)
    MirrorFactory(name="m3", status=Mirror.Status.SCHEDULED, last_synced_at=now - timedelta(days=3))
    client.force_login(make_user(*VIEW_ALL))
    status = _column(client.get(CHANGELIST), "status_display")
    updated = _column(client.get(CHANGELIST), "last_synced_at")

    for order, expected in [
        (f"{status}", ["m2", "m1", "m3"]),
        (f"-{status}", ["m3", "m1", "m2"]),
        (f"{updated}", ["m3", "m1", "m2"]),
        (f"-{updated}", ["m2", "m1", "m3"]),
    ]:
        response = client.get(CHANGELIST, {"o": order})
        assert response.status_code == 200, order
        assert _names(response) == expected, order


def test_all_mirrors_sorts_by_type_and_mode(client, make_user):
    MirrorFactory(name="m1", channel=ChannelFactory(kind="pypi"), mode=Mirror.Mode.ACTIVE)
    MirrorFactory(name="m2", channel=ChannelFactory(kind="conda"), mode=Mirror.Mode.PASSIVE)
    MirrorFactory(name="m3", channel=ChannelFactory(kind="cran"), mode=Mirror.Mode.ACTIVE)
    client.force_login(make_user(*VIEW_ALL))
    page = client.get(CHANGELIST)
    kind, mode = _column(page, "kind_label"), _column(page, "mode")
    # Every sortable column header is a link.
    html = page.content.decode()
    for index in (kind, mode, _column(page, "status_display"), _column(page, "last_synced_at")):
        assert f"?o={index}" in html

    assert _names(client.get(CHANGELIST, {"o": f"{kind}"})) == ["m2", "m3", "m1"]
    assert _names(client.get(CHANGELIST, {"o": f"-{kind}"})) == ["m1", "m3", "m2"]
    by_mode = _names(client.get(CHANGELIST, {"o": f"{mode}"}))
    assert by_mode[-1] == "m2" and set(by_mode[:2]) == {"m1", "m3"}


def test_all_mirrors_filters_by_status(client, make_user):
    MirrorFactory(name="m1", status=Mirror.Status.FAILED)
    MirrorFactory(name="m2", status=Mirror.Status.COMPLETED)
    client.force_login(make_user(*VIEW_ALL))

    response = client.get(CHANGELIST, {"status__exact": "failed"})

    assert _names(response) == ["m1"]


def test_status_column_shows_progress_of_a_running_mirror(client, make_user):
    mirror = MirrorFactory(name="busy", status=Mirror.Status.RUNNING)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING, step="fetching", seen=10, total=100)
    MirrorFactory(name="idle", status=Mirror.Status.COMPLETED)
    client.force_login(make_user(*VIEW_ALL))

    html = client.get(CHANGELIST).content.decode()

    assert 'data-phase="reading" max="100" value="10"></progress>' in html
    assert "fetching: 10 / 100 records read" in html
    assert "Completed" in html


def test_status_column_of_a_running_mirror_without_a_total(client, make_user):
    mirror = MirrorFactory(status=Mirror.Status.RUNNING)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING, step="listing", seen=1234)
    client.force_login(make_user(*VIEW_ALL))

    html = client.get(CHANGELIST).content.decode()

    assert "listing: 1,234 records read" in html
    assert "<progress" not in html


def test_all_mirrors_query_count_does_not_grow_per_row(
    client, make_user, django_assert_max_num_queries
):
    client.force_login(make_user(*VIEW_ALL))
    for i in range(3):
        mirror = MirrorFactory(status=Mirror.Status.RUNNING, policy=PolicyFactory())
        SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING, seen=i, total=10)
    client.get(CHANGELIST)  # warm up (session, permissions)
    with django_assert_max_num_queries(20) as few:
        client.get(CHANGELIST)
    for i in range(10):
        mirror = MirrorFactory(status=Mirror.Status.RUNNING, policy=PolicyFactory())
        SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING, seen=i, total=10)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(CHANGELIST)


def test_row_actions_depend_on_status(client, make_user):
    idle = MirrorFactory(status=Mirror.Status.COMPLETED)
    busy = MirrorFactory(status=Mirror.Status.RUNNING)
    SyncRunFactory(mirror=busy, state=SyncRun.State.RUNNING)
    client.force_login(make_user(*VIEW_ALL, *COMMAND_PERMS))

    html = client.get(CHANGELIST).content.decode()

    for name in ("details", "run", "restart"):
        assert command_url(name, idle) in html
    assert command_url("stop", idle) not in html
    assert command_url("stop", busy) in html
    assert command_url("run", busy) not in html


# --- All Mirrors: actions -----------------------------------------------------------------


def test_actions_are_offered_only_with_their_permissions(client, make_user):
    MirrorFactory()
    client.force_login(make_user(*VIEW_ALL, "mirrors_app.delete_mirror"))
    assert action_names(client.get(CHANGELIST)) == {"delete_selected"}

    client.force_login(make_user(*MANAGER_PERMS))
    assert action_names(client.get(CHANGELIST)) == {
        "run_now",
        "stop",
        "restart",
        "download_dependency_report",
        "delete_selected",
    }


@pytest.mark.parametrize(
    ("action", "perm"),
    [
        ("run_now", "mirrors_app.run_mirror"),
        ("stop", "mirrors_app.stop_mirror"),
        ("restart", "mirrors_app.restart_mirror"),
        ("download_dependency_report", "mirrors_app.download_dependency_report"),
    ],
)
def test_each_action_needs_its_own_permission(client, make_user, action, perm):
    mirror = MirrorFactory()
    if action == "stop":
        SyncRunFactory(mirror=mirror, state=SyncRun.State.QUEUED)
    others = [p for p in MANAGER_PERMS if p != perm]
    client.force_login(make_user(*others))
    assert action not in action_names(client.get(CHANGELIST))

    response = post_action(client, action, mirror)

    assert response.status_code == 302
    assert texts_of(response) == ["No action selected."]
    expected_runs = 1 if action == "stop" else 0
    assert mirror.runs.count() == expected_runs
    assert mirror.runs.active().count() == expected_runs


def test_run_now_action_queues_runs(client, manager, django_capture_on_commit_callbacks):
    first, second = MirrorFactory(), MirrorFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_action(client, "run_now", first, second)

    assert response.status_code == 302
    assert texts_of(response) == ["2 mirrors queued."]
    assert len(callbacks) == 2  # one sync_mirror.delay per run, sent after commit
    for mirror in (first, second):
        mirror.refresh_from_db()
        assert mirror.status == Mirror.Status.QUEUED
        run = mirror.runs.get()
        assert (run.state, run.trigger, run.requested_by) == ("queued", "manual", manager)


def test_run_now_on_a_busy_mirror_warns(client, manager, django_capture_on_commit_callbacks):
    busy = MirrorFactory(name="busy", status=Mirror.Status.RUNNING)
    running = SyncRunFactory(mirror=busy, state=SyncRun.State.RUNNING)
    idle = MirrorFactory(name="idle")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_action(client, "run_now", busy, idle)

    assert response.status_code == 302
    assert messages_of(response) == [
        ("warning", f"Mirror 'busy' already has a run in progress (run #{running.pk}, running)."),
        ("info", "1 mirror queued."),
    ]
    assert len(callbacks) == 1
    assert busy.runs.count() == 1


def test_stop_action_stops_a_queued_run(client, manager):
    mirror = MirrorFactory(status=Mirror.Status.QUEUED)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.QUEUED)

    response = post_action(client, "stop", mirror)

    assert response.status_code == 302
    assert texts_of(response) == ["1 mirror stopping."]
    run.refresh_from_db()
    mirror.refresh_from_db()
    assert run.state == SyncRun.State.STOPPED
    assert run.finished_at is not None
    assert mirror.status == Mirror.Status.STOPPED


def test_stop_action_asks_a_running_run_to_stop(client, manager):
    mirror = MirrorFactory(status=Mirror.Status.RUNNING)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)

    post_action(client, "stop", mirror)

    run.refresh_from_db()
    mirror.refresh_from_db()
    assert (run.state, mirror.status) == ("stopping", "stopping")


def test_stop_action_on_an_idle_mirror_warns(client, manager):
    mirror = MirrorFactory(name="idle")

    response = post_action(client, "stop", mirror)

    assert response.status_code == 302
    assert messages_of(response) == [
        ("warning", "Mirror 'idle' is not running."),
        ("info", "0 mirrors stopping."),
    ]


def test_restart_action_queues_a_restart_run(client, manager, django_capture_on_commit_callbacks):
    mirror = MirrorFactory(status=Mirror.Status.STOPPED)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.STOPPED)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_action(client, "restart", mirror)

    assert texts_of(response) == ["1 mirror restarted."]
    assert len(callbacks) == 1
    run = mirror.runs.active().get()
    assert (run.state, run.trigger) == ("queued", "restart")


def test_restart_action_on_a_busy_mirror_warns(client, manager):
    mirror = MirrorFactory(name="busy", status=Mirror.Status.QUEUED)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.QUEUED)

    response = post_action(client, "restart", mirror)

    assert response.status_code == 302
    levels = [level for level, _ in messages_of(response)]
    assert levels == ["warning", "info"]
    assert "already has a run in progress" in texts_of(response)[0]
    assert mirror.runs.count() == 1


def test_download_dependency_report_explains_why_there_is_none(client, manager):
    bare = MirrorFactory(name="bare")
    ruled = MirrorFactory(name="ruled", policy=PolicyFactory(name="strict"))

    response = post_action(client, "download_dependency_report", bare, ruled)

    assert response.status_code == 302
    texts = texts_of(response)
    assert len(texts) == 2
    assert any("'bare' has no policy" in t and "Include dependencies" in t for t in texts)
    assert any("Policy 'strict' does not allow packages by name" in t for t in texts)


def test_delete_selected_removes_mirror_and_schedule_but_keeps_packages(client, manager):
    mirror = MirrorFactory()
    schedules.schedule_sync(mirror)
    package = Package.objects.create(
        channel=mirror.channel, mirror=mirror, filename="a-1.0-0.conda", name="a", version="1.0"
    )
    keep = MirrorFactory()
    schedules.schedule_sync(keep)

    confirm = post_action(client, "delete_selected", mirror)
    assert confirm.status_code == 200  # the "Are you sure?" page
    assert Mirror.objects.filter(pk=mirror.pk).exists()

    response = post_action(client, "delete_selected", mirror, post="yes")

    assert response.status_code == 302
    assert "Successfully deleted 1 mirror." in texts_of(response)
    assert not Mirror.objects.filter(pk=mirror.pk).exists()
    assert not PeriodicTask.objects.filter(name=f"mirror-{mirror.pk}").exists()
    assert PeriodicTask.objects.filter(name=f"mirror-{keep.pk}").exists()
    package.refresh_from_db()
    assert package.mirror is None
    assert package.channel_id == mirror.channel_id


def test_delete_selected_removes_a_mirror_with_runs(client, manager):
    # A mirror's runs go with it: deleting one needs no separate "delete sync run" permission.
    mirror = MirrorFactory()
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)

    confirm = post_action(client, "delete_selected", mirror)
    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]

    post_action(client, "delete_selected", mirror, post="yes")

    assert not Mirror.objects.filter(pk=mirror.pk).exists()
    assert not SyncRun.objects.exists()


def test_delete_page_removes_the_schedule(client, make_user):
    mirror = MirrorFactory()
    schedules.schedule_sync(mirror)
    client.force_login(make_user(*MANAGER_PERMS))

    response = client.post(
        reverse("admin:mirrors_app_mirror_delete", args=[mirror.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Mirror.objects.exists()
    assert not PeriodicTask.objects.filter(name=f"mirror-{mirror.pk}").exists()


# --- Per-mirror command pages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ("run", "Start mirror <strong>forge</strong> now?"),
        ("stop", "Stop mirror <strong>forge</strong>?"),
        ("restart", "The run starts from the beginning"),
    ],
)
def test_command_get_shows_a_confirmation(client, make_user, command, text):
    mirror = MirrorFactory(name="forge")
    client.force_login(make_user(*COMMAND_PERMS))

    response = client.get(command_url(command, mirror))

    assert response.status_code == 200
    html = response.content.decode()
    assert text in html
    assert '<form method="post">' in html
    assert f'name="next" value="{change_url(mirror)}"' in html
    assert not mirror.runs.exists()  # GET changes nothing


def test_run_command_post_queues_and_redirects(
    client, make_user, django_capture_on_commit_callbacks
):
    mirror = MirrorFactory(name="forge")
    user = make_user("mirrors_app.run_mirror")
    client.force_login(user)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(command_url("run", mirror))

    assert response.status_code == 302
    assert response["Location"] == change_url(mirror)
    run = mirror.runs.get()
    assert (run.state, run.trigger, run.requested_by) == ("queued", "manual", user)
    assert texts_of(response) == [f"Mirror 'forge': run #{run.pk} is queued."]
    assert len(callbacks) == 1


def test_stop_command_post_stops_the_run(client, make_user):
    mirror = MirrorFactory(name="forge", status=Mirror.Status.QUEUED)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.QUEUED)
    client.force_login(make_user("mirrors_app.stop_mirror"))

    response = client.post(command_url("stop", mirror))

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == SyncRun.State.STOPPED
    assert texts_of(response) == [f"Mirror 'forge': run #{run.pk} is stopped."]


def test_restart_command_post_queues_a_restart(
    client, make_user, django_capture_on_commit_callbacks
):
    mirror = MirrorFactory(status=Mirror.Status.STOPPED)
    client.force_login(make_user("mirrors_app.restart_mirror"))

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(command_url("restart", mirror))

    assert response.status_code == 302
    assert mirror.runs.get().trigger == SyncRun.Trigger.RESTART


def test_command_that_cannot_be_done_shows_an_error_message(client, make_user):
    mirror = MirrorFactory(name="forge")
    client.force_login(make_user("mirrors_app.stop_mirror"))

    response = client.post(command_url("stop", mirror))

    assert response.status_code == 302
    assert messages_of(response) == [("error", "Mirror 'forge' is not running.")]


def test_run_command_on_a_busy_mirror_shows_an_error_message(client, make_user):
    mirror = MirrorFactory(name="forge", status=Mirror.Status.RUNNING)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)
    client.force_login(make_user("mirrors_app.run_mirror"))

    response = client.post(command_url("run", mirror))

    assert response.status_code == 302
    [(level, text)] = messages_of(response)
    assert level == "error" and "already has a run in progress" in text
    assert mirror.runs.count() == 1


@pytest.mark.parametrize(
    ("command", "perm"),
    [
        ("run", "mirrors_app.run_mirror"),
        ("stop", "mirrors_app.stop_mirror"),
        ("restart", "mirrors_app.restart_mirror"),
    ],
)
def test_command_needs_its_permission(client, make_user, command, perm):
    mirror = MirrorFactory(status=Mirror.Status.QUEUED)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.QUEUED)
    others = [p for p in (*MANAGER_PERMS, "mirrors_app.change_mirror") if p != perm]
    client.force_login(make_user(*others))

    assert client.get(command_url(command, mirror)).status_code == 403
    assert client.post(command_url(command, mirror)).status_code == 403

    run.refresh_from_db()
    assert run.state == SyncRun.State.QUEUED
    assert mirror.runs.count() == 1


def test_command_of_an_unknown_mirror_is_404(client, make_user):
    client.force_login(make_user(*COMMAND_PERMS))
    assert client.get(reverse("admin:mirrors_app_mirror_run", args=[999999])).status_code == 404


@pytest.mark.parametrize(
    "evil",
    [
        "https://evil.example/steal",
        "//evil.example/steal",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
    ],
)
def test_command_ignores_next_pointing_elsewhere(
    client, make_user, django_capture_on_commit_callbacks, evil
):
    mirror = MirrorFactory()
    client.force_login(make_user(*COMMAND_PERMS))

    page = client.get(command_url("run", mirror), {"next": evil})
    assert evil not in page.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(command_url("run", mirror), {"next": evil})

    assert response.status_code == 302
    assert response["Location"] == change_url(mirror)


def test_command_follows_next_on_this_site(client, make_user, django_capture_on_commit_callbacks):
    mirror = MirrorFactory()
    back = reverse("admin:channels_app_channel_change", args=[mirror.channel_id])
    client.force_login(make_user(*COMMAND_PERMS))

    assert (
        f'value="{back}"' in client.get(command_url("run", mirror), {"next": back}).content.decode()
    )
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(command_url("run", mirror), {"next": back})

    assert response["Location"] == back


def test_command_pages_need_a_staff_login(client, make_user):
    mirror = MirrorFactory()
    response = client.get(command_url("run", mirror))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


# --- See details --------------------------------------------------------------------------


def _package(mirror, n: int, *, stored: bool) -> Package:
    artifact = Artifact.objects.create(sha256=f"{n:064x}", size=10) if stored else None
    return Package.objects.create(
        channel=mirror.channel,
        mirror=mirror,
        unit="noarch",
        filename=f"pkg{n}-1.0-0.conda",
        name=f"pkg{n}",
        version="1.0",
        artifact=artifact,
        on_demand=not stored,
    )


def test_details_show_packages_run_counters_and_reasons(client, make_user):
    mirror = MirrorFactory(name="forge", mode=Mirror.Mode.ACTIVE, status=Mirror.Status.COMPLETED)
    for n in range(3):
        _package(mirror, n, stored=True)
    for n in range(3, 8):
        _package(mirror, n, stored=False)
    other = MirrorFactory(channel=mirror.channel)
    _package(other, 99, stored=True)  # another mirror's package is not counted
    SyncRunFactory(
        mirror=mirror,
        state=SyncRun.State.COMPLETED,
        created_at=timezone.now() - timedelta(days=2),
        seen=1,
    )
    run = SyncRunFactory(
        mirror=mirror,
        state=SyncRun.State.COMPLETED,
        seen=1234,
        filtered=30,
        filtered_reasons={"license GPL-3.0 not allowed": 20, "platform win-32 excluded": 10},
        ingested=1204,
        downloaded=3,
        passive=5,
        failed=1,
        bytes_downloaded=2048,
    )
    SyncRunFactory(mirror=mirror, state=SyncRun.State.SKIPPED)  # skipped ticks are not "latest"
    client.force_login(make_user("mirrors_app.view_mirror"))

    response = client.get(command_url("details", mirror))

    assert response.status_code == 200
    details = response.context["details"]
    assert (details["packages_active"], details["packages_passive"]) == (3, 5)
    assert response.context["run"] == run
    html = response.content.decode()
    files = f"/api/mirrors/{mirror.pk}/files/?state="
    assert f'<th>Stored here (downloaded by a run)</th><td><a href="{files}stored">3</a>' in html
    assert f'<th>Waiting for a first request (passive)</th><td><a href="{files}waiting">5' in html
    assert "<th>Offered by the source</th><td><strong>8</strong>" in html
    assert f"#{run.pk}</a>" in html
    assert "<th>Records read from the source (unchanged indexes are not read again)</th>" in html
    assert "<td>1234</td>" in html
    assert "<th>Excluded anew (new records, or a changed decision)</th><td>30</td>" in html
    assert "<th>Records added or updated</th><td>1204</td>" in html
    assert "<th>Failures</th><td>1</td>" in html
    assert "2.0\xa0KB" in html
    # Reasons, most frequent first.
    first = html.index("<tr><td>license GPL-3.0 not allowed</td><td>20</td></tr>")
    second = html.index("<tr><td>platform win-32 excluded</td><td>10</td></tr>")
    assert first < second
    assert "has no policy. A dependency report needs a policy" in html


def test_details_of_a_mirror_that_never_ran(client, make_user):
    policy = PolicyFactory(name="strict")
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy))
    client.force_login(make_user("mirrors_app.view_mirror"))

    html = client.get(command_url("details", mirror)).content.decode()

    assert "This mirror has not run yet." in html
    assert "strict (channel's)" in html
    assert "Policy &#x27;strict&#x27; does not allow packages by name" in html


def test_details_need_view_permission(client, make_user):
    mirror = MirrorFactory()
    client.force_login(make_user(*COMMAND_PERMS))
    assert client.get(command_url("details", mirror)).status_code == 403


def test_details_are_available_without_the_all_mirrors_permission(client, make_user):
    mirror = MirrorFactory()
    client.force_login(make_user("mirrors_app.view_mirror"))
    assert client.get(command_url("details", mirror)).status_code == 200


def _excluded(mirror, count: int) -> None:
    Package.objects.bulk_create(
        Package(
            channel=mirror.channel,
            mirror=mirror,
            unit="noarch",
            filename=f"pkg{n:05}-1.0-0.conda",
            name=f"pkg{n:05}",
            version="1.0",
            excluded_reason="not in the allow list",
        )
        for n in range(count)
    )


def test_details_list_at_most_1000_excluded_packages_and_link_the_csv(client, make_user):
    mirror = MirrorFactory(name="big")
    _excluded(mirror, 1001)
    client.force_login(make_user("mirrors_app.view_mirror"))

    response = client.get(command_url("details", mirror))

    assert response.context["excluded_total"] == 1001
    assert len(response.context["excluded"]) == 1000
    html = response.content.decode()
    assert (
        "1001 packages of this mirror are kept out (by a filter, the policy, or as unsafe or invalid)."
        in html
    )
    assert "The first 1000 are listed;" in html
    assert "pkg00999-1.0-0.conda" in html and "pkg01000-1.0-0.conda" not in html
    csv_url = reverse("admin:mirrors_app_mirror_excluded_csv", args=[mirror.pk])
    assert f'<a href="{csv_url}">Download all as CSV</a>' in html
    lines = client.get(csv_url).content.decode().splitlines()
    assert lines[0] == "path,name,version,reason"
    assert len(lines) == 1002


def test_details_without_a_policy_say_so(client, make_user):
    mirror = MirrorFactory()
    client.force_login(make_user("mirrors_app.view_mirror", "mirrors_app.change_mirror"))

    html = client.get(command_url("details", mirror)).content.decode()

    assert "No policy: every package of the mirror type is mirrored." in html
    assert "No file of this mirror is kept out." in html
    assert command_url("policy_preview", mirror) in html


def test_excluded_csv_needs_view_permission(client, make_user):
    mirror = MirrorFactory()
    client.force_login(make_user(*COMMAND_PERMS))

    assert client.get(command_url("excluded_csv", mirror)).status_code == 403


def test_dependency_report_download_without_a_report_explains_why(client, make_user):
    mirror = MirrorFactory(name="bare")
    client.force_login(
        make_user("mirrors_app.view_mirror", "mirrors_app.download_dependency_report")
    )

    response = client.get(command_url("dependency_report", mirror))

    assert response.status_code == 302
    assert response["Location"] == command_url("details", mirror)
    assert "Mirror 'bare' has no policy" in texts_of(response)[0]


def test_policy_preview_of_a_mirror_without_packages(client, make_user):
    mirror = MirrorFactory()
    client.force_login(make_user("mirrors_app.view_mirror", "mirrors_app.change_mirror"))

    response = client.post(command_url("policy_preview", mirror))

    assert response.status_code == 200
    html = response.content.decode()
    assert "<tr><th>Kept</th><td>0</td></tr>" in html
    assert "Nothing would change." in html


def test_policy_pages_need_a_staff_login(client):
    mirror = MirrorFactory()
    response = client.post(command_url("policy_apply", mirror))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


# --- The mirror form ----------------------------------------------------------------------


def mirror_form(channel, **overrides) -> dict:
    data = {
        "channel": channel.pk,
        "name": "forge",
        "mode": "passive",
        "source_url": SOURCE,
        "kind": channel.kind,
        "cron": "0 0 1 * *",
        "policy": "",
        "options": "{}",
        # Nothing answers at SOURCE: the check of a new source is confirmed away (see
        # test_source_checks.py for the check itself).
        "source_confirmed": "on",
    }
    return data | overrides


def form_errors(response) -> dict:
    assert response.status_code == 200, "the form was expected to be re-rendered"
    return response.context["adminform"].form.errors


def test_add_form_shows_the_seed_help(client, editor):
    response = client.get(ADD)

    assert response.status_code == 200
    html = response.content.decode()
    for text in [
        "Active downloads every package that passes the filters now",
        "Passive stores only the metadata",
        "The packages offered are the same either way",
        "Cannot be changed after creation",
        "midnight on the 1st",
        "do not run more often than daily",
        "A full PyPI mirror should run once yearly",
        "Run now",
        "Otherwise your changes are saved",
        "Save &amp; Run",
        "api/repo/",
        "upstream allowlist",
        "A policy already applied to the channel cannot also be applied to the mirror",
        "View applied policy",
    ]:
        assert text in html, text


def test_add_form_defaults(client, editor):
    form = client.get(ADD).context["adminform"].form

    assert form["cron"].value() == "0 0 1 * *"
    assert form["mode"].value() == "passive"
    assert not form["run_now"].value()


def test_add_form_takes_channel_and_kind_from_the_query(client, editor):
    channel = ChannelFactory(kind="pypi")

    response = client.get(ADD, {"channel": channel.pk})

    form = response.context["adminform"].form
    assert str(form["channel"].value()) == str(channel.pk)
    assert form["kind"].value() == "pypi"
    assert '<option value="pypi" selected>' in response.content.decode()


def test_add_form_ignores_an_unknown_channel_in_the_query(client, editor):
    response = client.get(ADD, {"channel": 999999})
    assert response.status_code == 200


def test_add_form_creates_a_mirror_and_its_schedule(
    client, editor, django_capture_on_commit_callbacks
):
    channel = ChannelFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(ADD, mirror_form(channel, cron="@weekly"))

    assert response.status_code == 302
    mirror = Mirror.objects.get()
    assert (mirror.name, mirror.channel, mirror.cron) == ("forge", channel, "0 0 * * 0")
    assert mirror.created_by == editor
    assert not mirror.runs.exists()  # saved, not started
    assert callbacks == []
    task = PeriodicTask.objects.get(name=f"mirror-{mirror.pk}")
    assert task.task == schedules.SYNC_TASK
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "0", "0")


@pytest.mark.parametrize(
    "extra",
    [{"_saveandrun": "Save & Run"}, {"run_now": "on"}],
    ids=["save-and-run", "run-now-checkbox"],
)
def test_add_form_can_start_the_mirror(client, editor, django_capture_on_commit_callbacks, extra):
    channel = ChannelFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(ADD, mirror_form(channel) | extra)

    assert response.status_code == 302
    mirror = Mirror.objects.get()
    run = mirror.runs.get()
    assert (run.state, run.trigger, run.requested_by) == ("queued", "manual", editor)
    assert mirror.status == Mirror.Status.QUEUED
    assert "Mirror 'forge' is queued to run now." in texts_of(response)
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "is not a valid cron expression"),
        ({"cron": "every day"}, "cron", "expected 5 fields"),
        ({"kind": "pypi"}, "kind", "does not match the package type of channel"),
        ({"kind": "npm"}, "kind", "Select a valid choice"),
        ({"source_url": "http://example.com/x"}, "source_url", "not on the upstream allowlist"),
        ({"source_url": "not a url"}, "source_url", "Enter a valid URL"),
        ({"mode": "mirror"}, "mode", "Select a valid choice"),
        ({"options": '{"subdirs": ["amiga-68k"]}'}, "options", "unknown platform"),
        ({"name": ""}, "name", "This field is required"),
    ],
)
def test_add_form_rejects_bad_input(client, editor, overrides, field, message):
    channel = ChannelFactory()

    response = client.post(ADD, mirror_form(channel, **overrides) | {"_saveandrun": "1"})

    errors = form_errors(response)
    assert message in " ".join(errors.get(field, [])), errors
    assert not Mirror.objects.exists()
    assert not SyncRun.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="mirror-").exists()


def test_add_form_rejects_the_channel_policy_as_mirror_policy(client, editor):
    policy = PolicyFactory(name="strict")
    channel = ChannelFactory(policy=policy)

    response = client.post(ADD, mirror_form(channel, policy=policy.pk))

    assert "is already applied to channel" in " ".join(form_errors(response)["policy"])
    assert not Mirror.objects.exists()


def test_add_form_accepts_another_policy_for_the_mirror(client, editor):
    channel = ChannelFactory(policy=PolicyFactory())
    own = PolicyFactory()

    response = client.post(ADD, mirror_form(channel, policy=own.pk))

    assert response.status_code == 302
    assert Mirror.objects.get().effective_policy() == own


def test_add_form_rejects_a_duplicate_name_in_the_channel(client, editor):
    channel = ChannelFactory()
    MirrorFactory(channel=channel, name="forge")

    response = client.post(ADD, mirror_form(channel))

    errors = form_errors(response)
    assert errors["name"] == ["This channel already has a mirror with this name."]
    assert "__all__" not in errors  # said once, on the name field
    assert Mirror.objects.count() == 1


def test_the_same_name_is_fine_in_another_channel(client, editor):
    MirrorFactory(name="forge")

    response = client.post(ADD, mirror_form(ChannelFactory()))

    assert response.status_code == 302
    assert Mirror.objects.filter(name="forge").count() == 2


def test_add_form_warns_about_a_more_than_daily_schedule(client, editor):
    response = client.post(ADD, mirror_form(ChannelFactory(), cron="*/30 * * * *"))

    assert response.status_code == 302
    assert Mirror.objects.exists()
    warnings = [text for level, text in messages_of(response) if level == "warning"]
    assert any("more often than daily" in text for text in warnings)


def test_add_form_warns_about_a_second_mirror_in_the_channel(client, editor):
    channel = ChannelFactory()
    MirrorFactory(channel=channel, name="first")

    response = client.post(ADD, mirror_form(channel, name="second"))

    assert response.status_code == 302
    assert Mirror.objects.filter(channel=channel).count() == 2
    warnings = [text for level, text in messages_of(response) if level == "warning"]
    assert any("more than one mirror" in text for text in warnings)


def test_add_form_without_warnings_shows_none(client, editor):
    response = client.post(ADD, mirror_form(ChannelFactory()))
    assert [level for level, _ in messages_of(response) if level == "warning"] == []


def test_add_form_needs_add_permission(client, make_user):
    client.force_login(make_user(*VIEW_ALL))
    channel = ChannelFactory()

    assert client.get(ADD).status_code == 403
    assert client.post(ADD, mirror_form(channel)).status_code == 403
    assert not Mirror.objects.exists()


# --- The change page ----------------------------------------------------------------------


@pytest.fixture
def saved_mirror():
    mirror = MirrorFactory(name="forge", mode=Mirror.Mode.PASSIVE)
    schedules.schedule_sync(mirror)
    return mirror


def test_change_page_shows_mode_and_channel_read_only(client, editor, saved_mirror):
    response = client.get(change_url(saved_mirror))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "mode" not in form.fields
    assert "channel" not in form.fields
    html = response.content.decode()
    assert 'name="mode"' not in html
    assert 'name="channel"' not in html
    assert "Next scheduled run" in html
    assert "Save &amp; Run" in html


def test_change_page_keeps_mode_and_channel(client, editor, saved_mirror):
    other = ChannelFactory()
    data = mirror_form(saved_mirror.channel, name="renamed") | {
        "mode": "active",
        "channel": other.pk,
    }

    response = client.post(change_url(saved_mirror), data)

    assert response.status_code == 302
    saved_mirror.refresh_from_db()
    assert saved_mirror.name == "renamed"
    assert saved_mirror.mode == Mirror.Mode.PASSIVE
    assert saved_mirror.channel_id != other.pk


def test_change_page_updates_the_schedule(client, editor, saved_mirror):
    response = client.post(
        change_url(saved_mirror), mirror_form(saved_mirror.channel, cron="@daily")
    )

    assert response.status_code == 302
    task = PeriodicTask.objects.get(name=f"mirror-{saved_mirror.pk}")
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_month) == ("0", "0", "*")
    assert PeriodicTask.objects.filter(name__startswith="mirror-").count() == 1


def test_change_page_rejects_bad_cron_and_keeps_the_schedule(client, editor, saved_mirror):
    response = client.post(
        change_url(saved_mirror), mirror_form(saved_mirror.channel, cron="61 * * * *")
    )

    assert "cron" in form_errors(response)
    saved_mirror.refresh_from_db()
    assert saved_mirror.cron == "0 0 1 * *"
    task = PeriodicTask.objects.get(name=f"mirror-{saved_mirror.pk}")
    assert task.crontab.day_of_month == "1"


def test_change_page_rejects_a_duplicate_name(client, editor, saved_mirror):
    MirrorFactory(channel=saved_mirror.channel, name="taken")

    response = client.post(
        change_url(saved_mirror), mirror_form(saved_mirror.channel, name="taken")
    )

    # Not a server error: `channel` is read-only here, yet the name clash is still caught.
    errors = form_errors(response)
    assert errors["name"] == ["This channel already has a mirror with this name."]
    saved_mirror.refresh_from_db()
    assert saved_mirror.name == "forge"


def test_change_page_save_and_run_on_a_busy_mirror_saves_and_warns(
    client, editor, saved_mirror, django_capture_on_commit_callbacks
):
    SyncRunFactory(mirror=saved_mirror, state=SyncRun.State.RUNNING)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            change_url(saved_mirror),
            mirror_form(saved_mirror.channel, name="renamed") | {"_saveandrun": "1"},
        )

    assert response.status_code == 302
    saved_mirror.refresh_from_db()
    assert saved_mirror.name == "renamed"
    assert callbacks == []
    assert saved_mirror.runs.count() == 1
    warnings = [text for level, text in messages_of(response) if level == "warning"]
    assert any(text.startswith("Saved, but not started:") for text in warnings)


def test_applied_policy_falls_back_to_the_channel_policy(client, editor):
    policy = PolicyFactory(name="channel-rules", description="Only MIT packages")
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy))

    html = client.get(change_url(mirror)).content.decode()

    url = reverse("admin:policies_app_policy_change", args=[policy.pk])
    assert f"<a href='{url}'>channel-rules</a> (the channel&#x27;s policy)" in html
    assert "Only MIT packages" in html


def test_applied_policy_prefers_the_mirror_policy(client, editor):
    mirror = MirrorFactory(
        channel=ChannelFactory(policy=PolicyFactory(name="channel-rules")),
        policy=PolicyFactory(name="mirror-rules"),
    )

    html = client.get(change_url(mirror)).content.decode()

    assert ">mirror-rules</a> (the mirror&#x27;s own policy)" in html


def test_applied_policy_when_there_is_none(client, editor):
    html = client.get(change_url(MirrorFactory())).content.decode()
    assert "No policy: every package of the mirror type is mirrored." in html


def test_change_page_lists_recent_runs(client, editor, saved_mirror):
    run = SyncRunFactory(mirror=saved_mirror, state=SyncRun.State.FAILED, error="boom")

    html = client.get(change_url(saved_mirror)).content.decode()

    assert reverse("admin:mirrors_app_syncrun_change", args=[run.pk]) in html
    assert "boom" in html


# --- Where saving and deleting lead -------------------------------------------------------


@pytest.fixture
def channel_editor(make_user, client):
    """May create, edit and delete mirrors from a channel's page, but not see All Mirrors."""
    user = make_user(
        "channels_app.view_channel",
        "channels_app.change_channel",
        "mirrors_app.view_mirror",
        "mirrors_app.add_mirror",
        "mirrors_app.change_mirror",
        "mirrors_app.delete_mirror",
    )
    client.force_login(user)
    return user


def test_saving_without_all_mirrors_returns_to_the_channel(client, channel_editor):
    channel = ChannelFactory()
    channel_page = reverse("admin:channels_app_channel_change", args=[channel.pk])

    response = client.post(ADD, mirror_form(channel))

    assert response.status_code == 302
    assert response["Location"] == channel_page  # not All Mirrors, which would be a 403
    assert client.get(channel_page).status_code == 200
    mirror = Mirror.objects.get()
    response = client.post(change_url(mirror), mirror_form(channel, name="renamed"))
    assert response["Location"] == channel_page
    # "Save and continue editing" still stays on the mirror.
    response = client.post(change_url(mirror), mirror_form(channel) | {"_continue": "1"})
    assert response["Location"] == change_url(mirror)


def test_deleting_without_all_mirrors_returns_to_the_channel(client, channel_editor):
    mirror = MirrorFactory()
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    delete_url = reverse("admin:mirrors_app_mirror_delete", args=[mirror.pk])

    assert not client.get(delete_url).context["perms_lacking"]
    response = client.post(delete_url, {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:channels_app_channel_change", args=[mirror.channel_id]
    )
    assert not Mirror.objects.exists()


def test_saving_without_any_channel_permission_returns_to_the_index(client, make_user):
    client.force_login(make_user("mirrors_app.add_mirror", "mirrors_app.view_mirror"))

    response = client.post(ADD, mirror_form(ChannelFactory()))

    assert response["Location"] == reverse("admin:index")
    assert Mirror.objects.exists()


# --- Runs admin ---------------------------------------------------------------------------


@pytest.fixture
def run_viewer(make_user, client):
    user = make_user(
        "mirrors_app.view_syncrun", "mirrors_app.change_syncrun", "mirrors_app.view_mirror"
    )
    client.force_login(user)
    return user


def test_runs_cannot_be_added(client, run_viewer):
    assert client.get(reverse("admin:mirrors_app_syncrun_add")).status_code == 403


def test_run_change_page_is_read_only(client, run_viewer):
    run = SyncRunFactory(state=SyncRun.State.COMPLETED, seen=5)
    url = reverse("admin:mirrors_app_syncrun_change", args=[run.pk])

    response = client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert 'name="_continue"' not in html
    assert client.post(url, {"state": "queued", "seen": "0"}).status_code == 403
    run.refresh_from_db()
    assert (run.state, run.seen) == ("completed", 5)


def test_runs_list_filters_by_state(client, run_viewer):
    running = SyncRunFactory(state=SyncRun.State.RUNNING)
    SyncRunFactory(state=SyncRun.State.COMPLETED)
    SyncRunFactory(state=SyncRun.State.FAILED)
    changelist = reverse("admin:mirrors_app_syncrun_changelist")

    response = client.get(changelist, {"state__exact": "running"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [running]
    assert len(client.get(changelist).context["cl"].result_list) == 3


def test_a_source_url_without_a_scheme_is_read_as_https():
    from mirrors_app.admin.forms import MirrorForm

    field = MirrorForm.base_fields["source_url"]
    assert field.clean("conda.anaconda.org/conda-forge") == "https://conda.anaconda.org/conda-forge"
    assert field.clean("http://127.0.0.1:8000/simple/") == "http://127.0.0.1:8000/simple/"

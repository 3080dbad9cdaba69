"""Live run progress: the JSON endpoint the admin pages poll (who sees what, its shape, and
counts equal to the details API's), the figures derived from a run's counts, and what a real
sync records for them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from channels_app.models import Channel
from mirrors_app import live
from mirrors_app.models import Mirror, SyncRun
from mirrors_app.templatetags.mirror_progress import duration
from tests.factories import ChannelFactory, MirrorFactory, SyncRunFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel

pytestmark = pytest.mark.django_db

PROGRESS = reverse("admin:mirrors_app_mirror_progress")
VIEW = ("mirrors_app.view_mirror",)


def _progress(client, *ids):
    return client.get(PROGRESS, {"ids": ",".join(str(i) for i in ids)})


def _downloading(mirror: Mirror, **counts) -> SyncRun:
    now = timezone.now()
    return SyncRunFactory(
        mirror=mirror,
        state=SyncRun.State.RUNNING,
        started_at=now - timedelta(seconds=30),
        downloads_started_at=now - timedelta(seconds=10),
        step="downloading package files",
        **counts,
    )


def test_answer_has_status_counts_and_figures_of_each_mirror(client, make_user, monkeypatch):
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)  # the figures' clock, whatever the load
    busy = MirrorFactory(name="busy", status=Mirror.Status.RUNNING)
    run = _downloading(
        busy,
        seen=40,
        units_total=2,
        units_done=2,
        files_to_download=10,
        bytes_to_download=10_000,
        downloaded=4,
        bytes_downloaded=4_000,
    )
    idle = MirrorFactory(name="idle", status=Mirror.Status.SCHEDULED)
    client.force_login(make_user(*VIEW))

    response = _progress(client, busy.pk, idle.pk)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    answer = response.json()
    assert answer["active"] is True
    first, second = answer["mirrors"]
    assert first["id"] == busy.pk and first["active"] is True
    assert first["status"] == {"value": "running", "label": "Running"}
    assert first["run"]["id"] == run.pk and first["run"]["step"] == "downloading package files"
    assert (first["run"]["files_to_download"], first["run"]["downloaded"]) == (10, 4)
    assert (first["run"]["bytes_to_download"], first["run"]["bytes_downloaded"]) == (10_000, 4_000)
    figures = first["figures"]
    assert figures["phase"] == "downloading" and (figures["done"], figures["total"]) == (4, 10)
    # 4,000 bytes in 10 s: 400 B/s, and 6,000 bytes to go: 15 s.
    assert round(figures["bytes_per_second"]) == 400
    assert round(figures["seconds_left"]) == 15
    assert 'max="10" value="4"' in first["html"] and "4 / 10 files" in first["html"]
    assert second == {
        "id": idle.pk,
        "status": {"value": "scheduled", "label": "Scheduled"},
        "active": False,
        "run": None,
        "figures": {"phase": None},
        "html": second["html"],
    }
    assert "Scheduled" in second["html"]


def test_run_counts_are_the_details_apis(client, api_client, make_user):
    mirror = MirrorFactory(status=Mirror.Status.RUNNING)
    _downloading(mirror, seen=7, ingested=5, filtered=2, files_to_download=3, downloaded=1)
    user = make_user(*VIEW)
    client.force_login(user)
    api_client.force_authenticate(user)

    shown = _progress(client, mirror.pk).json()["mirrors"][0]["run"]
    details = api_client.get(f"/api/mirrors/{mirror.pk}/details/").json()["latest_run"]

    assert shown == {name: details[name] for name in shown}
    assert {"seen", "total", "downloaded", "bytes_downloaded", "files_to_download"} <= set(shown)


def test_finished_run_shows_its_duration_and_volume(client, make_user):
    mirror = MirrorFactory(status=Mirror.Status.COMPLETED)
    started = timezone.now() - timedelta(minutes=5)
    SyncRunFactory(
        mirror=mirror,
        state=SyncRun.State.COMPLETED,
        started_at=started,
        finished_at=started + timedelta(seconds=125),
        seen=1234,
        downloaded=3,
        bytes_downloaded=3 * 1024 * 1024,
    )
    SyncRunFactory(mirror=mirror, state=SyncRun.State.SKIPPED)  # a later skipped tick
    client.force_login(make_user(*VIEW))

    entry = _progress(client, mirror.pk).json()["mirrors"][0]

    assert entry["active"] is False
    assert entry["figures"] == {"phase": "finished", "duration_seconds": 125.0}
    assert (
        "completed in 2 min 5 s: 1,234 records read, 3 files downloaded (3.0\xa0MB)"
        in (entry["html"])
    )


def test_reading_phase_counts_index_units(client, make_user, monkeypatch):
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)  # the figures' clock, whatever the load
    mirror = MirrorFactory(status=Mirror.Status.RUNNING)
    SyncRunFactory(
        mirror=mirror,
        state=SyncRun.State.RUNNING,
        started_at=timezone.now() - timedelta(seconds=20),
        step="linux-64",
        seen=500,
        units_total=4,
        units_done=1,
    )
    client.force_login(make_user(*VIEW))

    entry = _progress(client, mirror.pk).json()["mirrors"][0]

    figures = entry["figures"]
    assert (figures["phase"], figures["counted"], figures["done"], figures["total"]) == (
        "reading",
        "indexes",
        1,
        4,
    )
    assert round(figures["seconds_left"]) == 60  # 3 more units at 20 s each
    assert "1 / 4 indexes, 500 records read" in entry["html"]


def test_anonymous_visitors_are_sent_to_sign_in(client):
    mirror = MirrorFactory()
    response = _progress(client, mirror.pk)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_without_mirror_permissions_the_answer_is_403(client, make_user):
    mirror = MirrorFactory()
    client.force_login(make_user("channels_app.view_channel"))
    assert _progress(client, mirror.pk).status_code == 403


def test_mirrors_one_may_not_see_are_left_out_as_if_missing(client, make_user):
    public = MirrorFactory(name="public-one")
    hidden = MirrorFactory(
        name="secret-one",
        channel=ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE),
        status=Mirror.Status.RUNNING,
    )
    SyncRunFactory(mirror=hidden, state=SyncRun.State.RUNNING, step="secret step")
    sub = MirrorFactory(channel=ChannelFactory(parent=public.channel))
    client.force_login(make_user(*VIEW))

    both = _progress(client, public.pk, hidden.pk, sub.pk)
    only_hidden = _progress(client, hidden.pk)
    missing = _progress(client, 999_999)

    assert [entry["id"] for entry in both.json()["mirrors"]] == [public.pk]
    assert both.json()["active"] is False
    assert "secret" not in both.content.decode()
    assert only_hidden.status_code == missing.status_code == 404
    assert "secret" not in only_hidden.content.decode()


@pytest.mark.parametrize("ids", ["", "1,x", "-1", ",".join(["1"] * (live.MOST_IDS + 1))])
def test_bad_ids_are_refused(client, make_user, ids):
    client.force_login(make_user(*VIEW))
    response = client.get(PROGRESS, {"ids": ids})
    assert response.status_code == 400 and "ids" in response.json()["detail"]


def test_query_count_does_not_grow_with_the_mirrors(
    client, make_user, django_assert_max_num_queries
):
    client.force_login(make_user(*VIEW))
    mirrors = [MirrorFactory(status=Mirror.Status.RUNNING) for _ in range(2)]
    for mirror in mirrors:
        _downloading(mirror, files_to_download=2)
    _progress(client, *[m.pk for m in mirrors])  # warm up (session, permissions)
    with django_assert_max_num_queries(8) as few:
        _progress(client, *[m.pk for m in mirrors])
    for _ in range(5):
        mirror = MirrorFactory(status=Mirror.Status.COMPLETED)
        SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
        mirrors.append(mirror)
    with django_assert_max_num_queries(len(few)):
        _progress(client, *[m.pk for m in mirrors])


def test_the_pages_carry_the_live_status(client, make_user):
    mirror = MirrorFactory(status=Mirror.Status.RUNNING)
    _downloading(mirror, files_to_download=5, downloaded=2)
    client.force_login(
        make_user(*VIEW, "mirrors_app.view_all_mirrors", "channels_app.view_channel")
    )
    cell = f'data-mirror-progress="{mirror.pk}" data-progress-url="{PROGRESS}" data-active="true"'

    listing = client.get(reverse("admin:mirrors_app_mirror_changelist")).content.decode()
    details = client.get(reverse("admin:mirrors_app_mirror_details", args=[mirror.pk]))
    channel = client.get(reverse("admin:channels_app_channel_change", args=[mirror.channel_id]))

    assert cell in listing and "2 / 5 files" in listing and "mirrors_app/progress.js" in listing
    assert (
        cell in details.content.decode() and "mirrors_app/progress.js" in details.content.decode()
    )
    channel_html = channel.content.decode()
    assert f"data-mirror-progress='{mirror.pk}' data-progress-url='{PROGRESS}'" in channel_html
    assert "mirrors_app/progress.js" in channel_html


def test_duration_reads_as_a_person_would():
    assert [duration(s) for s in (None, 4.6, 65, 7260)] == ["", "5 s", "1 min 5 s", "2 h 1 min"]


def test_a_sync_records_what_it_reads_and_downloads(tmp_path, run_mirror):
    packages = [
        FakePackage("alpha", "1.0"),
        FakePackage("beta", "2.0", subdir="linux-64"),
        FakePackage("gamma", "0.1", subdir="linux-64"),
    ]
    with ChannelServer(build_channel(tmp_path / "upstream", packages)) as server:
        mirror = MirrorFactory(
            source_url=server.url, mode=Mirror.Mode.ACTIVE, options={"subdirs": ["linux-64"]}
        )
        run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert (run.units_total, run.units_done) == (2, 2)  # linux-64 and noarch
    assert (run.files_to_download, run.downloaded) == (3, 3)
    assert run.bytes_to_download == run.bytes_downloaded > 0
    assert run.downloads_started_at is not None

"""The admin index's overview: mirrors by status, recent failures, runs in progress, storage
used, channel sizes and the latest audit events, each shown only as far as the user may see."""

from __future__ import annotations

import pytest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from channels_app.models import Artifact, Channel, Package
from mirrors_app.models import Mirror, SyncRun
from psm.models import AuditEvent
from tests.factories import ChannelFactory, MirrorFactory, SyncRunFactory, UserFactory

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")
CHANGELIST = reverse("admin:mirrors_app_mirror_changelist")
MIRROR_VIEWER = (
    "mirrors_app.view_mirror",
    "mirrors_app.view_all_mirrors",
    "channels_app.view_channel",
)


def _package(channel: Channel, filename: str, *, size: int, stored: bool = True, **fields):
    artifact = Artifact.objects.create(sha256=filename.ljust(64, "0")[:64], size=size)
    return Package.objects.create(
        channel=channel,
        filename=filename,
        name=filename.split("-")[0],
        version="1.0",
        size=size,
        artifact=artifact if stored else None,
        **fields,
    )


@pytest.fixture
def scene():
    """A public channel with a running and a failed mirror, and a private one with a failure
    and packages nobody without access may learn of."""
    public = ChannelFactory(name="forge")
    running = MirrorFactory(name="busy", channel=public, status=Mirror.Status.RUNNING)
    SyncRunFactory(mirror=running, state=SyncRun.State.RUNNING, step="linux-64", seen=12)
    broken = MirrorFactory(name="broken", channel=public, status=Mirror.Status.FAILED)
    SyncRunFactory(mirror=broken, state=SyncRun.State.FAILED, error="HTTP 503 from upstream\nmore")
    MirrorFactory(name="done", channel=public, status=Mirror.Status.COMPLETED)
    _package(public, "alpha-1.0.tar.bz2", size=1000)
    _package(public, "beta-1.0.tar.bz2", size=500, on_demand=True, stored=False)
    _package(public, "gamma-1.0.tar.bz2", size=7000, excluded_reason="blocked")  # not served
    private = ChannelFactory(name="hush", visibility=Channel.Visibility.PRIVATE)
    hidden = MirrorFactory(name="hush-mirror", channel=private, status=Mirror.Status.FAILED)
    SyncRunFactory(mirror=hidden, state=SyncRun.State.FAILED, error="hush-reason")
    _package(private, "secret-1.0.tar.bz2", size=123_456)
    AuditEvent.objects.create(actor_name="root", action="channel.freeze", target_name="forge")
    return {"public": public, "running": running, "broken": broken, "private": private}


def test_superuser_sees_every_part(client, scene):
    client.force_login(UserFactory(is_superuser=True))

    response = client.get(INDEX)

    html = response.content.decode()
    shown = response.context["overview"]
    assert [(label, n) for label, n, _ in shown["by_status"]] == [
        ("Running", 1),
        ("Completed", 1),
        ("Failed", 2),
    ]
    assert f'href="{CHANGELIST}?status__exact=failed"' in html
    assert [row["run"].mirror.name for row in shown["failures"]] == ["hush-mirror", "broken"]
    assert "HTTP 503 from upstream" in html and "more" not in shown["failures"][1]["reason"]
    assert [row["mirror"].name for row in shown["in_progress"]] == ["busy"]
    assert f'data-mirror-progress="{scene["running"].pk}"' in html
    assert "mirrors_app/progress.js" in html
    assert shown["storage"] == {"files": 4, "bytes": 1000 + 500 + 7000 + 123_456}
    sizes = {row["channel"].path: (row["files"], row["bytes"]) for row in shown["channels"]["rows"]}
    assert sizes == {"forge": (2, 1500), "hush": (1, 123_456)}
    assert filesizeformat(123_456) in html  # as the viewer's page must not show it
    assert "channel.freeze" in [event.action for event in shown["events"]]
    assert reverse("admin:psm_auditevent_changelist") in html


def test_a_mirror_viewer_sees_nothing_of_a_private_channel(client, make_user, scene):
    client.force_login(make_user(*MIRROR_VIEWER))

    response = client.get(INDEX)

    html = response.content.decode()
    shown = response.context["overview"]
    assert [(label, n) for label, n, _ in shown["by_status"]] == [
        ("Running", 1),
        ("Completed", 1),
        ("Failed", 1),
    ]
    assert [row["run"].mirror.name for row in shown["failures"]] == ["broken"]
    assert [row["channel"].path for row in shown["channels"]["rows"]] == ["forge"]
    # The private channel's name and size, as the page would show them (not "123": a run's
    # id may be that number).
    assert "hush" not in html and filesizeformat(123_456) not in html
    # Totals over all storage would tell of the private channel; the audit log needs its right.
    assert "storage" not in shown and "events" not in shown
    assert 'id="overview-storage"' not in html and 'id="overview-events"' not in html


def test_status_counts_link_to_the_list_only_for_those_who_may_open_it(client, make_user, scene):
    client.force_login(make_user("mirrors_app.view_mirror", "channels_app.view_channel"))

    response = client.get(INDEX)

    assert all(url == "" for _, _, url in response.context["overview"]["by_status"])
    assert f"{CHANGELIST}?status" not in response.content.decode()


def test_without_mirror_permissions_no_mirror_part_is_shown(client, make_user, scene):
    client.force_login(make_user("channels_app.view_channel", "psm.view_auditevent"))

    response = client.get(INDEX)

    shown = response.context["overview"]
    assert "by_status" not in shown and 'id="overview-mirrors"' not in response.content.decode()
    assert [row["channel"].path for row in shown["channels"]["rows"]] == ["forge"]
    assert "channel.freeze" in [event.action for event in shown["events"]]


def test_query_count_does_not_grow_with_mirrors_and_channels(
    client, django_assert_max_num_queries, scene
):
    client.force_login(UserFactory(is_superuser=True))
    client.get(INDEX)  # warm up (session, permissions)
    with django_assert_max_num_queries(30) as few:
        client.get(INDEX)
    for i in range(4):
        channel = ChannelFactory(name=f"more{i}")
        _package(channel, f"pkg{i}-1.0.tar.bz2", size=10)
        mirror = MirrorFactory(channel=channel, status=Mirror.Status.RUNNING)
        SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING)
        failed = MirrorFactory(channel=channel, status=Mirror.Status.FAILED)
        SyncRunFactory(mirror=failed, state=SyncRun.State.FAILED, error="x")
    with django_assert_max_num_queries(len(few)):
        client.get(INDEX)

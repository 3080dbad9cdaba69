"""The actions a mirror's row offers (All Mirrors and the channel page): only those its state
allows and the user may take, none leading to a 403; and Delete, which says what becomes of the
mirror's packages and can delete them too."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from channels_app.models import Artifact, Channel, Package
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, SyncRunFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:mirrors_app_mirror_changelist")
Status = Mirror.Status
VIEW = (
    "channels_app.view_channel",
    "mirrors_app.view_mirror",
    "mirrors_app.view_all_mirrors",
)
RUNNER = (*VIEW, "mirrors_app.run_mirror", "mirrors_app.stop_mirror", "mirrors_app.restart_mirror")
ALL = (*RUNNER, "mirrors_app.delete_mirror", "mirrors_app.download_dependency_report")


def url(name: str, mirror: Mirror) -> str:
    return reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk])


def offered(html: str, mirror: Mirror) -> set[str]:
    """The mirror's per-mirror pages a page links to (run, stop, details, …)."""
    return set(re.findall(rf"/admin/mirrors_app/mirror/{mirror.pk}/([a-z_-]+)", html))


def channel_page(channel: Channel) -> str:
    return reverse("admin:channels_app_channel_change", args=[channel.pk])


@pytest.mark.parametrize(
    ("status", "run_state", "expected"),
    [
        (Status.SCHEDULED, None, {"details", "run", "delete"}),  # never ran: no restart
        (Status.QUEUED, SyncRun.State.QUEUED, {"details", "stop", "delete"}),
        (Status.RUNNING, SyncRun.State.RUNNING, {"details", "stop", "delete"}),
        (Status.STOPPING, SyncRun.State.STOPPING, {"details", "delete"}),
        (Status.COMPLETED, SyncRun.State.COMPLETED, {"details", "run", "restart", "delete"}),
        (Status.STOPPED, SyncRun.State.STOPPED, {"details", "run", "restart", "delete"}),
        (Status.FAILED, SyncRun.State.FAILED, {"details", "run", "restart", "delete"}),
    ],
)
def test_rows_offer_what_the_state_allows(client, make_user, status, run_state, expected):
    mirror = MirrorFactory(status=status)
    if run_state:
        SyncRunFactory(mirror=mirror, state=run_state)
    client.force_login(make_user(*ALL))

    for page in (CHANGELIST, channel_page(mirror.channel)):
        html = client.get(page).content.decode()
        assert offered(html, mirror) - {"change"} == expected, page


@pytest.mark.parametrize(
    ("perms", "expected"),
    [
        (VIEW, {"details"}),
        (RUNNER, {"details", "run", "restart"}),
        (ALL, {"details", "run", "restart", "dependency-report", "delete"}),
    ],
)
def test_rows_offer_what_the_user_may_do(client, make_user, perms, expected):
    policy = PolicyFactory(allow_specs=["numpy"], include_dependencies=True)
    mirror = MirrorFactory(status=Status.COMPLETED, policy=policy)
    client.force_login(make_user(*perms))

    for page in (CHANGELIST, channel_page(mirror.channel)):
        html = client.get(page).content.decode()
        assert offered(html, mirror) - {"change"} == expected, page


def test_dependency_report_is_offered_only_where_there_is_one(client, make_user):
    bare = MirrorFactory(status=Status.COMPLETED)
    client.force_login(make_user(*ALL))

    html = client.get(CHANGELIST).content.decode()

    assert "dependency-report" not in offered(html, bare)


def test_the_row_dependency_report_downloads_the_mirror_csv(client, make_user):
    policy = PolicyFactory(allow_specs=["numpy"], include_dependencies=True)
    mirror = MirrorFactory(status=Status.COMPLETED, policy=policy)
    client.force_login(make_user(*ALL))

    response = client.get(url("dependency_report", mirror))

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response.content.decode().startswith("requested,package,version")


def test_commands_from_the_channel_page_return_to_it(client, make_user):
    mirror = MirrorFactory(status=Status.COMPLETED)
    client.force_login(make_user(*ALL))
    page = channel_page(mirror.channel)

    html = client.get(page).content.decode()

    assert f"{url('run', mirror)}?next={page.replace('/', '%2F')}" in html


USERS = {
    "view only": VIEW,
    "run, not delete": RUNNER,
    "every mirror permission": ALL,
}


@pytest.mark.parametrize("who", [*USERS, "superuser"])
def test_no_link_leads_to_a_403(client, make_user, admin_user, who):
    channel = ChannelFactory(name="forge")
    ChannelFactory(name="sub", parent=channel)
    policy = PolicyFactory(allow_specs=["numpy"], include_dependencies=True)
    idle = MirrorFactory(channel=channel, status=Status.COMPLETED, policy=policy)
    busy = MirrorFactory(channel=channel, status=Status.RUNNING)
    SyncRunFactory(mirror=busy, state=SyncRun.State.RUNNING)
    SyncRunFactory(mirror=idle, state=SyncRun.State.COMPLETED)
    client.force_login(admin_user if who == "superuser" else make_user(*USERS[who]))

    followed = 0
    for page in (CHANGELIST, channel_page(channel)):
        html = client.get(page).content.decode()
        for link in sorted(set(re.findall(r"href=['\"](/admin/[^'\"#]*)['\"]", html))):
            if "logout" in link:
                continue
            response = client.get(link.replace("&amp;", "&"))
            assert response.status_code in (200, 302), f"{who}: {link} from {page}"
            followed += 1
    assert followed > 10


# --- Delete: what becomes of the packages ---------------------------------------------------


@pytest.fixture
def holding(make_user, client):
    """A mirror with 3 packages, 2 of them with a stored file (100 + 50 bytes)."""
    mirror = MirrorFactory(name="forge")
    for i, size in enumerate([100, 50, None]):
        artifact = Artifact.objects.create(sha256=f"{i}" * 64, size=size) if size else None
        Package.objects.create(
            channel=mirror.channel,
            mirror=mirror,
            filename=f"p{i}-1.0-0.conda",
            name=f"p{i}",
            version="1.0",
            artifact=artifact,
        )
    client.force_login(make_user(*ALL))
    return mirror


def test_delete_page_says_what_becomes_of_the_packages(client, holding):
    response = client.get(url("delete", holding))

    html = response.content.decode()
    assert response.status_code == 200
    assert "It brought <strong>3</strong> packages into the channel" in html
    assert "<strong>2</strong> of them with their file stored here (<strong>150" in html
    assert 'type="checkbox" name="with_packages"' in html
    assert "checked" not in html.split('name="with_packages"')[1].split(">")[0]  # keeps them


def test_delete_keeps_the_packages_by_default(client, holding, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url("delete", holding), {"post": "yes"})

    assert response.status_code == 302
    assert not Mirror.objects.filter(pk=holding.pk).exists()
    packages = Package.objects.filter(channel=holding.channel)
    assert packages.count() == 3
    assert not packages.filter(removed=True).exists()
    assert not packages.exclude(mirror=None).exists()
    assert not callbacks  # nothing to publish
    follow = client.get(response["Location"])
    assert "its 3 packages stay in the channel" in follow.content.decode()


def test_delete_with_packages_drops_them_at_the_next_publish(
    client, holding, django_capture_on_commit_callbacks
):
    channel = holding.channel
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url("delete", holding), {"post": "yes", "with_packages": "on"})

    assert response.status_code == 302
    assert not Mirror.objects.filter(pk=holding.pk).exists()
    assert Package.objects.filter(channel=channel, removed=True).count() == 3
    assert len(callbacks) == 1  # the publish that drops them
    channel.refresh_from_db()
    assert channel.content_version == 1


def test_delete_page_breadcrumbs_lead_to_no_403(client, make_user):
    # Without "view all mirrors" the mirrors list is a 403: the breadcrumbs go to the channel.
    mirror = MirrorFactory()
    client.force_login(
        make_user(
            "channels_app.view_channel", "mirrors_app.view_mirror", "mirrors_app.delete_mirror"
        )
    )

    html = client.get(url("delete", mirror)).content.decode()

    assert f'href="{CHANGELIST}"' not in html
    assert channel_page(mirror.channel) in html


# --- All Mirrors: the type filter and search ------------------------------------------------


def test_type_filter_shows_the_type_column_labels(client, make_user):
    MirrorFactory(channel=ChannelFactory(kind="pypi"), name="index")
    MirrorFactory(name="forge")
    client.force_login(make_user(*VIEW))

    response = client.get(CHANGELIST, {"kind": "pypi"})

    html = response.content.decode()
    assert [m.name for m in response.context["cl"].result_list] == ["index"]
    type_filter = html[html.index("By type") :]
    assert "standard python</a>" in type_filter[: type_filter.index("</ul>")]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("forge-channel", ["a"]),  # a channel name
        ("team", ["b"]),  # a subchannel's parent name
        ("mirror.example/conda", ["a"]),  # the source URL
        ("example conda", ["a"]),  # every word somewhere
        ("sekrit", []),  # a secret of the URL is never searched
    ],
)
def test_search_matches_channel_names_and_source_urls(client, make_user, query, found, settings):
    settings.PSM_UPSTREAM_ALLOWLIST = ["mirror.example", "127.0.0.1"]
    MirrorFactory(
        name="a",
        channel=ChannelFactory(name="forge-channel"),
        source_url="https://mirror.example/conda/t/sekrit-token/main",
    )
    MirrorFactory(name="b", channel=ChannelFactory(name="ml", parent=ChannelFactory(name="team")))
    client.force_login(make_user(*VIEW, "mirrors_app.view_subchannel_mirror"))

    response = client.get(CHANGELIST, {"q": query})

    assert sorted(m.name for m in response.context["cl"].result_list) == found


def test_deleting_selected_mirrors_offers_the_same_choice(
    client, holding, django_capture_on_commit_callbacks
):
    other = MirrorFactory(name="other")
    selected = {
        "action": "delete_selected",
        "index": "0",
        "_selected_action": [holding.pk, other.pk],
    }

    confirm = client.post(CHANGELIST, selected)

    html = confirm.content.decode()
    assert "They brought <strong>3</strong> packages into their channels" in html
    assert 'type="checkbox" name="with_packages"' in html

    with django_capture_on_commit_callbacks(execute=False):
        client.post(CHANGELIST, selected | {"post": "yes", "with_packages": "on"})

    assert not Mirror.objects.filter(pk__in=[holding.pk, other.pk]).exists()
    assert Package.objects.filter(removed=True).count() == 3

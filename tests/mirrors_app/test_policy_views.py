"""What a policy did to a synced mirror, in the API and the admin: excluded packages, "why is X
missing?", the dependency report, and previewing / applying a policy change without refetching.

Every test syncs a real conda channel (tests/fixtures/conda_channel.py) in this process.
"""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from channels_app.models import Package
from mirrors_app import reports
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel

pytestmark = pytest.mark.django_db

PACKAGES = [
    FakePackage("alpha", "1.0"),
    FakePackage("alpha", "2.0"),
    FakePackage("beta", "1.0", subdir="linux-64", fmt=".conda", depends=["alpha >=2"]),
    FakePackage("gamma", "1.0", subdir="linux-64"),
]
NOT_LISTED = "not in the allow list"
EXCLUDED = [
    {
        "path": "linux-64/gamma-1.0-0.tar.bz2",
        "name": "gamma",
        "version": "1.0",
        "reason": NOT_LISTED,
    },
    {"path": "noarch/alpha-1.0-0.tar.bz2", "name": "alpha", "version": "1.0", "reason": NOT_LISTED},
]
VIEW = "mirrors_app.view_mirror"
CHANGE = "mirrors_app.change_mirror"
REPORT = "mirrors_app.download_dependency_report"


@pytest.fixture
def source(tmp_path):
    with ChannelServer(build_channel(tmp_path / "up", PACKAGES)) as server:
        yield server


@pytest.fixture
def mirror(source, run_mirror) -> Mirror:
    """A synced active mirror whose channel policy allows beta and its dependency alpha 2.0."""
    policy = PolicyFactory(name="beta-only", allow_specs=["beta"], include_dependencies=True)
    mirror = MirrorFactory(
        channel=ChannelFactory(name="main", policy=policy),
        name="forge",
        source_url=source.url,
        mode=Mirror.Mode.ACTIVE,
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return mirror


def _csv(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode())))


def _allow_gamma_too(mirror: Mirror) -> None:
    policy = mirror.channel.policy
    policy.allow_specs = ["beta", "gamma"]
    policy.save()


def _excluded_names() -> set[str]:
    return set(Package.objects.exclude(excluded_reason="").values_list("filename", flat=True))


# --- API: excluded packages --------------------------------------------------------------------


def test_api_lists_excluded_packages_with_reasons(api_client, make_user, mirror):
    api_client.force_authenticate(make_user(VIEW))

    response = api_client.get(f"/api/mirrors/{mirror.pk}/excluded/")

    assert response.status_code == 200
    assert response.json() == EXCLUDED


@pytest.mark.parametrize("how", ["format", "accept"])
def test_api_gives_excluded_packages_as_csv(api_client, make_user, mirror, how):
    api_client.force_authenticate(make_user(VIEW))
    url = f"/api/mirrors/{mirror.pk}/excluded/"

    if how == "format":
        response = api_client.get(url, {"format": "csv"})
    else:
        response = api_client.get(url, HTTP_ACCEPT="text/csv")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="main-forge-excluded.csv"'
    rows = _csv(response.content)
    assert rows[0] == ["path", "name", "version", "reason"]
    assert rows[1:] == [list(row.values()) for row in EXCLUDED]


def test_api_excluded_packages_need_view_permission(api_client, make_user, mirror):
    api_client.force_authenticate(make_user(CHANGE, REPORT))

    assert api_client.get(f"/api/mirrors/{mirror.pk}/excluded/").status_code == 403
    response = api_client.get(f"/api/mirrors/{mirror.pk}/excluded/", {"format": "csv"})
    assert response.status_code == 403
    assert "permission" in response.content.decode()


# --- API: why is X missing? --------------------------------------------------------------------


def test_api_explains_by_package_name(api_client, make_user, mirror):
    api_client.force_authenticate(make_user(VIEW))

    response = api_client.get(f"/api/mirrors/{mirror.pk}/explain/", {"package": "alpha"})

    assert response.status_code == 200
    answers = {a["path"]: (a["allowed"], a["reason"], a["stored"]) for a in response.json()}
    assert answers == {
        "noarch/alpha-1.0-0.tar.bz2": (False, NOT_LISTED, False),
        "noarch/alpha-2.0-0.tar.bz2": (True, "allowed by beta-only", True),
    }


def test_api_explains_by_file_name(api_client, make_user, mirror):
    api_client.force_authenticate(make_user(VIEW))

    response = api_client.get(
        f"/api/mirrors/{mirror.pk}/explain/", {"package": "gamma-1.0-0.tar.bz2"}
    )

    assert response.status_code == 200
    assert [(a["path"], a["version"], a["reason"]) for a in response.json()] == [
        ("linux-64/gamma-1.0-0.tar.bz2", "1.0", NOT_LISTED)
    ]


def test_api_explain_of_a_package_the_source_lacks_is_empty(api_client, make_user, mirror):
    api_client.force_authenticate(make_user(VIEW))

    response = api_client.get(f"/api/mirrors/{mirror.pk}/explain/", {"package": "zeta"})

    assert response.status_code == 200
    assert response.json() == []


# --- API: dependency report --------------------------------------------------------------------


def test_api_dependency_report_as_json_and_csv(api_client, make_user, mirror):
    api_client.force_authenticate(make_user(VIEW, REPORT))
    url = f"/api/mirrors/{mirror.pk}/dependency-report/"

    rows = api_client.get(url).json()
    response = api_client.get(url, {"format": "csv"})

    assert [
        (r["requested"], r["package"], r["version"], r["depth"], r["status"]) for r in rows
    ] == [
        ("beta", "beta", "1.0", 0, "present"),
        ("beta", "alpha", "2.0", 1, "present"),
    ]
    assert rows[1]["required_by"] == "beta"
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "main-forge-dependency-report.csv" in response["Content-Disposition"]
    lines = _csv(response.content)
    assert lines[0] == list(reports.REPORT_COLUMNS)
    assert lines[1][:3] == ["beta", "beta", "1.0"]
    assert len(lines) == 3


def test_api_dependency_report_is_404_with_the_reason_when_there_is_none(
    api_client, make_user, mirror
):
    policy = mirror.channel.policy
    policy.include_dependencies = False
    policy.save()
    api_client.force_authenticate(make_user(VIEW, REPORT))

    response = api_client.get(f"/api/mirrors/{mirror.pk}/dependency-report/")

    assert response.status_code == 404
    assert response.json() == {"detail": reports.dependency_report_unavailable(mirror)}
    assert "'beta-only'" in response.json()["detail"]


@pytest.mark.parametrize("perms", [(VIEW,), (REPORT,)])
def test_api_dependency_report_needs_view_and_report_permissions(
    api_client, make_user, mirror, perms
):
    api_client.force_authenticate(make_user(*perms))

    assert api_client.get(f"/api/mirrors/{mirror.pk}/dependency-report/").status_code == 403


# --- API: preview and apply a policy change ----------------------------------------------------


def test_api_policy_preview_changes_nothing(api_client, make_user, mirror):
    _allow_gamma_too(mirror)
    api_client.force_authenticate(make_user(VIEW, CHANGE))

    response = api_client.post(f"/api/mirrors/{mirror.pk}/policy-preview/")

    assert response.status_code == 200
    body = response.json()
    assert body["entering_packages"] == ["linux-64/gamma-1.0-0.tar.bz2"]
    assert (body["entering"], body["leaving"], body["allowed"], body["excluded"]) == (1, 0, 3, 1)
    assert body["excluded_by_reason"] == {NOT_LISTED: 1}
    assert _excluded_names() == {"alpha-1.0-0.tar.bz2", "gamma-1.0-0.tar.bz2"}


def test_api_policy_apply_changes_what_the_mirror_holds_without_refetching(
    api_client, make_user, mirror, source
):
    _allow_gamma_too(mirror)
    api_client.force_authenticate(make_user(VIEW, CHANGE))
    before = len(source.requests)

    response = api_client.post(f"/api/mirrors/{mirror.pk}/policy-apply/")

    assert response.status_code == 200
    assert response.json()["entering_packages"] == ["linux-64/gamma-1.0-0.tar.bz2"]
    assert _excluded_names() == {"alpha-1.0-0.tar.bz2"}
    assert len(source.requests) == before


def test_api_policy_apply_reports_leaving_packages_with_reasons(api_client, make_user, mirror):
    policy = mirror.channel.policy
    policy.block_specs = ["alpha"]
    policy.save()
    api_client.force_authenticate(make_user(VIEW, CHANGE))

    body = api_client.post(f"/api/mirrors/{mirror.pk}/policy-apply/").json()

    assert body["leaving_packages"] == [
        {"path": "noarch/alpha-2.0-0.tar.bz2", "reason": "blocked by package rule 'alpha'"}
    ]
    assert "alpha-2.0-0.tar.bz2" in _excluded_names()


@pytest.mark.parametrize("command", ["policy-preview", "policy-apply"])
def test_api_policy_commands_need_change_permission(api_client, make_user, mirror, command):
    _allow_gamma_too(mirror)
    api_client.force_authenticate(make_user(VIEW, REPORT))

    response = api_client.post(f"/api/mirrors/{mirror.pk}/{command}/")

    assert response.status_code == 403
    assert "gamma-1.0-0.tar.bz2" in _excluded_names()


@pytest.mark.parametrize("command", ["policy-preview", "policy-apply"])
def test_api_policy_commands_are_post_only(api_client, make_user, mirror, command):
    api_client.force_authenticate(make_user(VIEW, CHANGE))

    assert api_client.get(f"/api/mirrors/{mirror.pk}/{command}/").status_code == 405


# --- Admin: See details ------------------------------------------------------------------------


def details_url(mirror: Mirror) -> str:
    return reverse("admin:mirrors_app_mirror_details", args=[mirror.pk])


def test_details_list_excluded_packages_with_a_csv_link(client, make_user, mirror):
    client.force_login(make_user(VIEW))

    response = client.get(details_url(mirror))

    assert response.status_code == 200
    assert response.context["excluded"] == EXCLUDED
    html = response.content.decode()
    assert (
        "2 packages of this mirror are kept out (by a filter, the policy, or as unsafe or invalid)."
        in html
    )
    assert (
        "<tr><td>noarch/alpha-1.0-0.tar.bz2</td><td>alpha</td><td>1.0</td>"
        f"<td>{NOT_LISTED}</td></tr>"
    ) in html
    assert reverse("admin:mirrors_app_mirror_excluded_csv", args=[mirror.pk]) in html


def test_details_explain_why_a_package_is_missing(client, make_user, mirror):
    client.force_login(make_user(VIEW))

    response = client.get(details_url(mirror), {"package": "alpha"})

    assert [(a["path"], a["allowed"]) for a in response.context["explanation"]] == [
        ("noarch/alpha-1.0-0.tar.bz2", False),
        ("noarch/alpha-2.0-0.tar.bz2", True),
    ]
    html = response.content.decode()
    assert (
        f"<td>noarch/alpha-1.0-0.tar.bz2</td><td>1.0</td><td>no</td><td>{NOT_LISTED}</td>" in html
    )
    assert "allowed by beta-only" in html
    missing = client.get(details_url(mirror), {"package": "zeta"}).content.decode()
    assert "holds no package or file named &ldquo;zeta&rdquo;" in missing


def test_details_link_to_the_applied_policy_for_who_may_see_it(client, make_user, mirror):
    policy = mirror.channel.policy
    client.force_login(make_user(VIEW, "policies_app.view_policy"))
    html = client.get(details_url(mirror)).content.decode()
    url = reverse("admin:policies_app_policy_change", args=[policy.pk])
    assert f'<a href="{url}">View applied policy: beta-only</a> (channel\'s)' in html

    client.force_login(make_user(VIEW))
    html = client.get(details_url(mirror)).content.decode()
    assert "Applied policy: beta-only" in html
    assert url not in html


def test_details_offer_policy_buttons_and_report_link_only_with_permissions(
    client, make_user, mirror
):
    preview = reverse("admin:mirrors_app_mirror_policy_preview", args=[mirror.pk])
    report = reverse("admin:mirrors_app_mirror_dependency_report", args=[mirror.pk])
    client.force_login(make_user(VIEW))
    html = client.get(details_url(mirror)).content.decode()
    assert preview not in html and report not in html

    client.force_login(make_user(VIEW, CHANGE, REPORT))
    html = client.get(details_url(mirror)).content.decode()
    assert f'<form method="post" action="{preview}"' in html
    assert reverse("admin:mirrors_app_mirror_policy_apply", args=[mirror.pk]) in html
    assert report in html


def test_excluded_csv_download(client, make_user, mirror):
    client.force_login(make_user(VIEW))

    response = client.get(reverse("admin:mirrors_app_mirror_excluded_csv", args=[mirror.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"] == 'attachment; filename="main-forge-excluded.csv"'
    assert _csv(response.content) == [
        ["path", "name", "version", "reason"],
        *[list(row.values()) for row in EXCLUDED],
    ]


def test_dependency_report_download_from_details(client, make_user, mirror):
    client.force_login(make_user(VIEW, REPORT))
    url = reverse("admin:mirrors_app_mirror_dependency_report", args=[mirror.pk])

    response = client.get(url)

    assert response.status_code == 200
    assert _csv(response.content)[0] == list(reports.REPORT_COLUMNS)
    client.force_login(make_user(VIEW))
    assert client.get(url).status_code == 403


# --- Admin: the "Download dependency report" action --------------------------------------------


def _action(client, *mirrors):
    data = {
        "action": "download_dependency_report",
        "index": "0",
        ACTION_CHECKBOX_NAME: [m.pk for m in mirrors],
    }
    return client.post(reverse("admin:mirrors_app_mirror_changelist"), data)


@pytest.fixture
def manager(client, make_user):
    user = make_user(VIEW, "mirrors_app.view_all_mirrors", REPORT)
    client.force_login(user)
    return user


def test_action_downloads_the_csv_of_one_mirror(client, manager, mirror):
    response = _action(client, mirror)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert "main-forge-dependency-report.csv" in response["Content-Disposition"]
    lines = _csv(response.content)
    assert lines[0] == list(reports.REPORT_COLUMNS)
    assert [line[1] for line in lines[1:]] == ["beta", "alpha"]


def test_action_on_several_mirrors_zips_their_reports_and_explains_the_others(
    client, manager, mirror
):
    second = MirrorFactory(channel=mirror.channel, name="second", source_url=mirror.source_url)
    bare = MirrorFactory(name="bare")

    response = _action(client, mirror, second, bare)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == [
            "main-forge-dependency-report.csv",
            "main-second-dependency-report.csv",
        ]
        assert archive.read("main-forge-dependency-report.csv").decode().startswith("requested,")
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(texts) == 1 and "'bare' has no policy" in texts[0]


# --- Admin: preview and apply ------------------------------------------------------------------


def test_admin_policy_preview_shows_counts_and_packages(client, make_user, mirror):
    _allow_gamma_too(mirror)
    client.force_login(make_user(VIEW, CHANGE))

    response = client.post(reverse("admin:mirrors_app_mirror_policy_preview", args=[mirror.pk]))

    assert response.status_code == 200
    change = response.context["change"]
    assert (change["entering"], change["leaving"], change["allowed"]) == (1, 0, 3)
    html = response.content.decode()
    assert "<tr><th>Entering the channel</th><td>1</td></tr>" in html
    assert "<li>linux-64/gamma-1.0-0.tar.bz2</li>" in html
    assert reverse("admin:mirrors_app_mirror_policy_apply", args=[mirror.pk]) in html
    assert "csrfmiddlewaretoken" in html
    assert "gamma-1.0-0.tar.bz2" in _excluded_names()  # a preview changes nothing


def test_admin_apply_confirms_then_applies(client, make_user, mirror):
    _allow_gamma_too(mirror)
    client.force_login(make_user(VIEW, CHANGE))
    url = reverse("admin:mirrors_app_mirror_policy_apply", args=[mirror.pk])

    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "gamma-1.0-0.tar.bz2" in _excluded_names()

    response = client.post(url)

    assert response.status_code == 302
    assert response["Location"] == details_url(mirror)
    assert _excluded_names() == {"alpha-1.0-0.tar.bz2"}
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert texts == [
        "Policy applied to mirror 'forge': 1 packages entered, 0 left; 3 kept, 1 excluded. "
        "The channel is being republished."
    ]


@pytest.mark.parametrize("page", ["policy_preview", "policy_apply"])
def test_admin_policy_pages_need_change_permission(client, make_user, mirror, page):
    _allow_gamma_too(mirror)
    client.force_login(make_user(VIEW, REPORT))
    url = reverse(f"admin:mirrors_app_mirror_{page}", args=[mirror.pk])

    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    assert "gamma-1.0-0.tar.bz2" in _excluded_names()


def test_policy_apply_waits_for_an_active_run(api_client, client, make_user, mirror):
    """A run decides what it ingests with the policy as it is; applying meanwhile is refused
    (the run applies a changed policy itself). A preview is always allowed."""
    from mirrors_app import services

    _allow_gamma_too(mirror)
    services.sync_run_create(mirror=mirror)
    user = make_user(VIEW, CHANGE)
    api_client.force_authenticate(user)
    assert api_client.post(f"/api/mirrors/{mirror.pk}/policy-preview/").status_code == 200

    response = api_client.post(f"/api/mirrors/{mirror.pk}/policy-apply/")
    assert response.status_code == 409 and "run in progress" in response.json()["detail"]
    client.force_login(user)
    response = client.post(reverse("admin:mirrors_app_mirror_policy_apply", args=[mirror.pk]))
    assert response.status_code == 302
    assert "run in progress" in str(list(get_messages(response.wsgi_request))[0])
    assert "gamma-1.0-0.tar.bz2" in _excluded_names()  # nothing applied

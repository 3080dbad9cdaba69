"""No silent empty success: a run that reads nothing fails, a run that misses part of its source
completes with warnings naming what was missing, and a new source is checked when it is saved."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils.html import escape

from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index

pytestmark = pytest.mark.django_db
State = SyncRun.State

REPOSITORIES = {
    "conda": (
        ChannelServer,
        lambda root: build_channel(
            root, [FakePackage("alpha", "1.0"), FakePackage("gamma", "0.1", subdir="linux-64")]
        ),
    ),
    "pypi": (IndexServer, lambda root: build_index(root, [FakeDist("alpha", "1.0")])),
    "cran": (CranServer, lambda root: build_repo(root, [RPackage("alpha", "1.0")])),
}


@pytest.fixture
def serve(tmp_path):
    """`serve(kind, damage)`: a real fixture repository of that kind, damaged by
    `damage(root)`, served on loopback."""
    with contextlib.ExitStack() as stack:

        def start(kind: str, damage: Callable[[Path], object] = lambda root: None):
            server_class, build = REPOSITORIES[kind]
            root = build(tmp_path / kind)
            damage(root)
            return stack.enter_context(server_class(root))

        yield start


def _remove(*paths: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        for path in paths:
            target = root / path
            shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


@dataclass
class Case:
    kind: str
    damage: Callable[[Path], object] = lambda root: None
    path: str = ""  # the source URL after the server's
    options: dict = field(default_factory=dict)
    expected: tuple[str, ...] = ()  # in the error (failing) or the warnings (completing)


def _run(serve, run_mirror, case: Case) -> SyncRun:
    server = serve(case.kind, case.damage)
    path = case.path if case.path or case.kind != "pypi" else "/simple/"
    mirror = MirrorFactory(
        channel=ChannelFactory(kind=case.kind),
        kind=case.kind,
        source_url=server.url + path,
        options=case.options,
    )
    return run_mirror(mirror)


NOTHING_READ = {
    "conda: every subdir's repodata missing": Case(
        "conda",
        _remove("noarch", "linux-64"),
        expected=("nothing could be read", "noarch: not found", "linux-64: not found"),
    ),
    "python: no simple index": Case(
        "pypi", path="/", expected=("the index root was not found", "usually ends in /simple/")
    ),
    "python: no simple index, projects listed": Case(
        "pypi",
        path="/",
        options={"projects": ["alpha"]},
        expected=("nothing could be read", "alpha: not found in the source"),
    ),
    "R: no PACKAGES": Case("cran", _remove("src/contrib"), expected=("no PACKAGES index",)),
}


@pytest.mark.parametrize("case", NOTHING_READ.values(), ids=NOTHING_READ.keys())
def test_a_run_that_reads_nothing_fails_naming_what_is_missing(serve, run_mirror, case):
    run = _run(serve, run_mirror, case)
    assert run.state == State.FAILED
    for text in case.expected:
        assert text in run.error
    assert run.warnings == ""
    assert run.mirror.status == Mirror.Status.FAILED


PART_MISSING = {
    "conda: a subdir channeldata.json lists": Case(
        "conda", _remove("linux-64"), expected=("linux-64: not found in the source",)
    ),
    "conda: noarch": Case(
        "conda", _remove("noarch"), expected=("noarch: not found in the source",)
    ),
    "python: a project of the list": Case(
        "pypi",
        options={"projects": ["alpha", "nonesuch"]},
        expected=("nonesuch: not found in the source",),
    ),
    "R: a package of the list": Case(
        "cran",
        options={"packages": ["alpha", "nonesuch"]},
        expected=("nonesuch: named in the mirror's options, but not in the source's index",),
    ),
    # Without channeldata.json the usual platforms are only guessed: their absence is normal.
    "conda: guessed platforms (none)": Case("conda", _remove("channeldata.json", "linux-64")),
}


@pytest.mark.parametrize("case", PART_MISSING.values(), ids=PART_MISSING.keys())
def test_a_run_that_misses_part_of_its_source_completes_with_warnings(
    serve, run_mirror, admin_client, case
):
    run = _run(serve, run_mirror, case)
    assert run.state == State.COMPLETED, run.error
    assert run.error == ""
    warnings = run.warnings.splitlines()
    assert len(warnings) == len(case.expected), warnings
    assert all(text in line for text, line in zip(case.expected, warnings, strict=True))
    assert run.seen > 0
    assert admin_client.get(f"/api/runs/{run.pk}/").json()["warnings"] == warnings
    run_page = admin_client.get(reverse("admin:mirrors_app_syncrun_change", args=[run.pk]))
    assert all(escape(line) in run_page.content.decode() for line in warnings)
    details = admin_client.get(reverse("admin:mirrors_app_mirror_details", args=[run.mirror.pk]))
    listing = admin_client.get(reverse("admin:mirrors_app_mirror_changelist")).content.decode()
    if case.expected:
        assert details.context["run"].warnings == run.warnings
        assert 'id="run-warnings"' in details.content.decode()
        assert "Completed with warnings" in listing
    else:
        assert "Completed with warnings" not in listing


# --- The source, checked when a mirror gets it --------------------------------------------------

CHECKS = {
    # kind, files written to a plain loopback server (None: a real fixture repository), path,
    # what the warning says (None: no warning)
    "conda: a channel": ("conda", None, "", None),
    "conda: noarch only": ("conda", {"noarch/repodata.json": "{}"}, "", None),
    "conda: nothing": ("conda", {}, "", "does not look like a conda channel"),
    "python: an index (JSON)": ("pypi", None, "/simple/", None),
    "python: an index (HTML)": (
        "pypi",
        {"simple/index.html": '<html><a href="/simple/alpha/">Alpha</a></html>'},
        "/simple/",
        None,
    ),
    "python: no index": ("pypi", {}, "/simple/", "has no Python simple index (HTTP 404)"),
    "python: a home page": (
        "pypi",
        {"index.html": '<html><a href="/about/">About us</a></html>'},
        "/",
        "does not look like a Python simple index",
    ),
    "R: a repository": ("cran", None, "", None),
    "R: nothing": ("cran", {}, "", "does not look like a CRAN-like repository"),
}


@pytest.mark.parametrize(("kind", "files", "path", "warning"), CHECKS.values(), ids=CHECKS.keys())
def test_api_create_checks_the_source_and_saves_anyway(
    admin_client, serve, upstream, kind, files, path, warning
):
    if files is None:
        url = serve(kind).url
    else:
        for name, content in files.items():
            upstream.write(name, content)
        url = upstream.url
    response = _create(admin_client, kind, url + path)
    assert response.status_code == 201, response.json()
    warnings = response.json()["warnings"]
    assert len(warnings) == (warning is not None), warnings
    assert warning is None or warning in warnings[0]
    assert Mirror.objects.filter(pk=response.json()["id"]).exists()


def _create(client, kind: str, source_url: str, **fields):
    channel = ChannelFactory(kind=kind)
    body = {"channel": channel.name, "name": "m", "kind": kind, "source_url": source_url}
    return client.post("/api/mirrors/", body | fields, content_type="application/json")


def test_a_source_that_cannot_be_reached_is_a_warning_saying_why(admin_client, refused_url):
    response = _create(admin_client, "conda", refused_url + "/channel")
    assert response.status_code == 201
    (warning,) = response.json()["warnings"]
    assert warning.startswith(f"PSM could not check the source: {refused_url}/channel/")
    assert "could not connect to" in warning and "connection refused" in warning


def test_the_check_goes_through_the_upstream_rules(admin_client, settings, serve):
    """`localhost` passes the URL check, but it leads to a loopback address the allowlist does
    not name: the check connects to nothing."""
    server = serve("conda")
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost"]
    response = _create(admin_client, "conda", server.url.replace("127.0.0.1", "localhost"))
    assert response.status_code == 201
    (warning,) = response.json()["warnings"]
    assert "PSM could not check the source" in warning and "loopback" in warning
    assert server.requests == []


def test_an_edit_checks_the_source_only_when_its_url_changes(admin_client, serve, upstream):
    server = serve("conda")
    mirror = MirrorFactory(channel=ChannelFactory(kind="conda"), source_url=server.url)
    url = f"/api/mirrors/{mirror.pk}/"
    patch = json.dumps({"cron": "@weekly"})
    response = admin_client.patch(url, patch, content_type="application/json")
    assert response.status_code == 200 and response.json()["warnings"] == []
    assert server.requests == []
    patch = json.dumps({"source_url": upstream.url})  # nothing there
    response = admin_client.patch(url, patch, content_type="application/json")
    (warning,) = response.json()["warnings"]
    assert "does not look like a conda channel" in warning


def test_admin_add_form_asks_to_confirm_a_source_that_does_not_look_right(admin_client, upstream):
    channel = ChannelFactory(kind="conda")
    add = reverse("admin:mirrors_app_mirror_add")
    assert 'type="hidden" name="source_confirmed"' in admin_client.get(add).content.decode()
    form = {
        "channel": channel.pk,
        "name": "forge",
        "mode": "passive",
        "source_url": upstream.url,  # nothing there
        "kind": "conda",
        "cron": "0 0 1 * *",
        "policy": "",
        "options": "{}",
    }
    response = admin_client.post(add, form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert "does not look like a conda channel" in errors[0]
    page = response.content.decode()
    assert 'type="checkbox" name="source_confirmed"' in page
    assert "Create anyway: I know the source does not look like a conda repository" in page
    assert not Mirror.objects.exists()
    response = admin_client.post(add, form | {"source_confirmed": "on"})
    assert response.status_code == 302
    assert Mirror.objects.get().source_url == upstream.url

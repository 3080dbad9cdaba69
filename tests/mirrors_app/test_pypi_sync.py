"""Standard Python mirrors: filters, incremental re-syncs and hostile upstreams."""

from __future__ import annotations

import orjson
import pytest

from channels_app.models import Package
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.http import response_body
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index

pytestmark = pytest.mark.django_db

JSON = "application/vnd.pypi.simple.v1+json"
DISTS = [
    FakeDist("alpha", "1.0"),
    FakeDist("alpha", "2.0"),
    FakeDist("alpha", "2.0", kind="sdist"),
    FakeDist("alpha", "3.0b1"),
    FakeDist("beta", "0.5", tag="cp312-cp312-manylinux_2_17_x86_64"),
    FakeDist("beta", "0.5", tag="cp311-cp311-win_amd64"),
]


@pytest.fixture
def index(tmp_path):
    return build_index(tmp_path / "index", DISTS)


@pytest.fixture
def upstream(index):
    with IndexServer(index) as server:
        yield server


def _mirror(upstream, mode=Mirror.Mode.PASSIVE, **options) -> Mirror:
    return MirrorFactory(
        channel=ChannelFactory(kind="pypi"),
        kind="pypi",
        mode=mode,
        source_url=upstream.index_url,
        options=options,
    )


def _served(client, mirror, project) -> list[str]:
    response = client.get(
        f"/api/repo/{mirror.channel.name}/simple/{project}/", headers={"Accept": JSON}
    )
    if response.status_code == 404:
        return []
    return sorted(f["filename"] for f in orjson.loads(response_body(response))["files"])


def test_mirror_filters_decide_what_enters_with_reasons(upstream, run_mirror, client):
    mirror = _mirror(
        upstream,
        projects=["alpha >=2", "beta"],
        package_types=["wheel"],
        prereleases=False,
        platforms=["manylinux*_x86_64"],
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered_reasons == {
        "not in the project list": 1,
        "package type sdist not mirrored": 1,
        "pre-release": 1,
        "wheel platform not mirrored": 1,
    }
    assert _served(client, mirror, "alpha") == ["alpha-2.0-py3-none-any.whl"]
    assert _served(client, mirror, "beta") == ["beta-0.5-cp312-cp312-manylinux_2_17_x86_64.whl"]


def test_only_the_named_projects_are_fetched(upstream, run_mirror):
    run_mirror(_mirror(upstream, projects=["beta"]))
    pages = {path for _, path, _ in upstream.requests if path.startswith("/simple/")}
    assert pages == {"/simple/beta/"}


def test_resync_fetches_only_changed_projects_and_applies_changed_filters(
    index, upstream, run_mirror, client
):
    mirror = _mirror(upstream)
    assert run_mirror(mirror).ingested == 6
    build_index(index, [*DISTS, FakeDist("alpha", "4.0")])
    run = run_mirror(mirror)
    assert (run.ingested, run.seen) == (1, 5)  # beta answered 304, alpha's page was read
    Mirror.objects.filter(pk=mirror.pk).update(options={"latest": 1})
    mirror.refresh_from_db()
    run = run_mirror(mirror)  # nothing changed upstream: the filters are applied again
    assert run.ingested == 0
    assert _served(client, mirror, "alpha") == ["alpha-4.0-py3-none-any.whl"]


def test_a_bad_project_page_does_not_stop_the_others(index, upstream, run_mirror, client):
    (index / "simple" / "alpha" / "index.json").write_text(
        '{"meta": {"api-version": "1.1"}, "files": ['
    )
    (index / "simple" / "alpha" / "index.html").write_text("")
    upstream.json_only = True
    mirror = _mirror(upstream)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED
    assert "alpha" in run.warnings
    assert _served(client, mirror, "beta") != []


def test_active_mirror_refuses_a_file_whose_hash_does_not_match(index, upstream, run_mirror):
    wheel = index / "files" / "alpha-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    assert run.failed == 1
    bad = Package.objects.get(filename="alpha-1.0-py3-none-any.whl")
    assert bad.artifact is None and "expected 920 bytes" in bad.error  # size checked first
    assert Package.objects.filter(artifact__isnull=False).count() == 5


def test_serials_let_a_resync_skip_unchanged_projects_without_a_request(
    index, upstream, run_mirror
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    assert mirror.units.count() == 2 and all(u.serial for u in mirror.units.all())
    build_index(index, [*DISTS, FakeDist("beta", "0.6")])
    before = len(upstream.requests)
    run = run_mirror(mirror)
    pages = [p for _, p, _ in upstream.requests[before:] if p.startswith("/simple/")]
    assert pages == ["/simple/", "/simple/beta/"]  # alpha's serial did not move
    assert run.ingested == 1


def test_an_enormous_project_page_is_refused_and_the_others_arrive(
    index, upstream, run_mirror, client, monkeypatch
):
    from channels_app.formats import pypi

    monkeypatch.setattr(pypi, "MAX_PAGE_BYTES", 3000)
    page = index / "simple" / "alpha" / "index.json"
    page.write_bytes(page.read_bytes().replace(b'"files":[', b'"files":[' + b" " * 5000, 1))
    mirror = _mirror(upstream)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED
    assert "alpha" in run.warnings and "3000 byte limit" in run.warnings
    assert _served(client, mirror, "alpha") == []
    assert len(_served(client, mirror, "beta")) == 2


def test_a_publish_rewrites_only_the_pages_of_changed_projects(index, upstream, run_mirror, client):
    from channels_app.models import PublishedFile

    mirror = _mirror(upstream)
    run_mirror(mirror)
    pages = dict(PublishedFile.objects.values_list("path", "pk"))
    build_index(index, [*DISTS, FakeDist("beta", "0.6")])
    run_mirror(mirror)
    after = dict(PublishedFile.objects.values_list("path", "pk"))
    assert after["simple/alpha/index.json"] == pages["simple/alpha/index.json"]  # untouched
    assert after["simple/beta/index.json"] != pages["simple/beta/index.json"]
    assert "beta-0.6-py3-none-any.whl" in _served(client, mirror, "beta")
    assert len(_served(client, mirror, "alpha")) == 4


def test_a_project_page_that_times_out_is_reported_and_the_others_arrive(
    upstream, run_mirror, client, settings
):
    settings.PSM_HTTP_TIMEOUT = 1
    upstream.delay["/simple/alpha/"] = 3
    mirror = _mirror(upstream)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED
    assert "alpha" in run.warnings and "timed out" in run.warnings.lower()
    assert run.filtered_reasons == {"index unreadable: alpha": 1}
    assert len(_served(client, mirror, "beta")) == 2


def test_a_stopped_run_resumes_where_it_stopped(index, upstream, run_mirror, monkeypatch):
    """Shared batched writes: what a stopped run finished is written and not read again."""
    from mirrors_app.sync import progress as progress_module

    mirror = _mirror(upstream)
    real_step = progress_module.Progress.step

    def stop_after_alpha(self, text, **kwargs):
        real_step(self, text, **kwargs)
        if text.startswith("beta:"):
            from mirrors_app import services

            services.mirror_stop(mirror=mirror)
            self.flush()

    monkeypatch.setattr(progress_module.Progress, "step", stop_after_alpha)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.STOPPED
    assert list(mirror.units.values_list("name", flat=True)) == ["alpha"]
    assert Package.objects.filter(mirror=mirror, unit="alpha").count() == 4
    monkeypatch.setattr(progress_module.Progress, "step", real_step)
    before = len(upstream.requests)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED
    pages = [p for _, p, _ in upstream.requests[before:] if p.startswith("/simple/")]
    assert pages == ["/simple/", "/simple/beta/"]  # alpha is not read again
    assert Package.objects.filter(mirror=mirror).count() == 6
    restart = run_mirror(mirror, restart=True)
    assert restart.seen == 6  # a restart reads everything again


def test_a_project_gone_upstream_leaves_the_project_list_and_its_page(
    index, upstream, run_mirror, client
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    build_index(index, [d for d in DISTS if d.name != "beta"])
    run_mirror(mirror)
    response = client.get(f"/api/repo/{mirror.channel.name}/simple/", headers={"Accept": JSON})
    listed = orjson.loads(response_body(response))["projects"]
    assert [p["name"] for p in listed] == ["alpha"]
    assert _served(client, mirror, "beta") == []
    assert len(_served(client, mirror, "alpha")) == 4


def test_a_source_that_suddenly_lists_no_project_fails_and_keeps_the_channel(
    upstream, run_mirror, client
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    upstream.pages["/simple/"] = b'{"meta": {"api-version": "1.1"}, "projects": []}'
    run = run_mirror(mirror)
    assert [p for _, p, _ in upstream.requests[-1:]] == ["/simple/"]  # the empty list was read
    assert run.state == SyncRun.State.FAILED
    assert "lists nothing to mirror" in run.error
    assert len(_served(client, mirror, "alpha")) == 4 and len(_served(client, mirror, "beta")) == 2

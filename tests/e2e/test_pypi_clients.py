"""pip and uv installing from a Python channel of PSM, served over real HTTP.

Upstream is a real fixture index of wheels and sdists on loopback (``IndexServer``); PSM mirrors
it in-process and is served by ``live_server``; pip and uv run as real subprocesses.
"""

from __future__ import annotations

import subprocess

import pytest
import requests

from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index, pip_install, uv_install

pytestmark = pytest.mark.django_db(transaction=True)

DISTS = [
    FakeDist("Alpha_Pkg", "1.0", upload_time="2024-01-01T00:00:00.000000Z"),
    FakeDist("Alpha_Pkg", "2.0", upload_time="2024-06-01T00:00:00.000000Z"),
    FakeDist("Alpha_Pkg", "2.0", kind="sdist", upload_time="2024-06-01T00:00:00.000000Z"),
    FakeDist("beta", "0.5", requires=["alpha-pkg>=1"]),
]


@pytest.fixture
def upstream(tmp_path):
    with IndexServer(build_index(tmp_path / "index", DISTS)) as server:
        yield server


def _sync(run_mirror, upstream, mode) -> Mirror:
    channel = ChannelFactory(kind="pypi")
    mirror = MirrorFactory(
        channel=channel, kind="pypi", mode=mode, source_url=upstream.index_url, options={}
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.ingested == 4
    return mirror


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_pip_installs_through_psm(run_mirror, upstream, live_server, tmp_path, mode):
    mirror = _sync(run_mirror, upstream, mode)
    before = [p for _, p, _ in upstream.requests if p.startswith("/files/")]
    index = f"{live_server.url}/api/repo/{mirror.channel.name}/simple/"
    _ok(pip_install(index, ["beta"], tmp_path / "target"))
    assert (tmp_path / "target" / "beta").is_dir()
    assert (tmp_path / "target" / "alpha_pkg").is_dir()
    fetched = [p for _, p, _ in upstream.requests if p.startswith("/files/")][len(before) :]
    if mode == Mirror.Mode.ACTIVE:
        assert fetched == []  # every byte came from PSM's storage
    else:
        assert all(p.endswith((".whl", ".metadata")) for p in fetched) and fetched


def test_uv_installs_through_psm_with_exclude_newer(run_mirror, upstream, live_server, tmp_path):
    mirror = _sync(run_mirror, upstream, Mirror.Mode.PASSIVE)
    index = f"{live_server.url}/api/repo/{mirror.channel.name}/simple/"
    _ok(uv_install(index, ["alpha-pkg"], tmp_path / "new"))
    assert list((tmp_path / "new").glob("alpha_pkg-2.0.dist-info"))
    _ok(
        uv_install(
            index,
            ["alpha-pkg"],
            tmp_path / "old",
            extra=["--exclude-newer", "2024-03-01T00:00:00Z"],
        )
    )
    assert list((tmp_path / "old").glob("alpha_pkg-1.0.dist-info"))


def test_simple_pages_negotiate_and_redirect(run_mirror, upstream, live_server):
    mirror = _sync(run_mirror, upstream, Mirror.Mode.PASSIVE)
    base = f"{live_server.url}/api/repo/{mirror.channel.name}/simple"
    page = requests.get(
        f"{base}/alpha-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=10
    )
    assert page.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    assert page.headers["Vary"] == "Accept"
    files = {f["filename"]: f for f in page.json()["files"]}
    assert files["alpha_pkg-1.0-py3-none-any.whl"]["upload-time"] == "2024-01-01T00:00:00.000000Z"
    html = requests.get(f"{base}/alpha-pkg/", headers={"Accept": "text/html"}, timeout=10)
    assert html.headers["Content-Type"].startswith("text/html")
    moved = requests.get(f"{base}/Alpha_Pkg/", allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"].endswith("/simple/alpha-pkg/")
    refused = requests.get(f"{base}/", headers={"Accept": "application/xml"}, timeout=10)
    assert refused.status_code == 406
    etag = page.headers["ETag"]
    again = requests.get(
        f"{base}/alpha-pkg/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json", "If-None-Match": etag},
        timeout=10,
    )
    assert again.status_code == 304


def test_a_psm_python_channel_is_a_source_for_another(run_mirror, upstream, live_server, tmp_path):
    first = _sync(run_mirror, upstream, Mirror.Mode.PASSIVE)
    second = MirrorFactory(
        channel=ChannelFactory(kind="pypi"),
        kind="pypi",
        mode=Mirror.Mode.ACTIVE,
        source_url=f"{live_server.url}/api/repo/{first.channel.name}/simple/",
        options={},
    )
    run = run_mirror(second)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.downloaded == 4
    index = f"{live_server.url}/api/repo/{second.channel.name}/simple/"
    _ok(pip_install(index, ["beta"], tmp_path / "target"))
    assert (tmp_path / "target" / "beta").is_dir()

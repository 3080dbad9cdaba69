"""A real conda client (py-rattler) installing from PSM served over real HTTP.

Upstream is a real fixture channel on loopback (``ChannelServer``); PSM syncs it in-process and
is served by pytest-django's ``live_server`` on 127.0.0.1, so every byte rattler reads went
through PSM's URL routing, index publishing and file serving.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import rattler
import requests
import zstandard
from django.db import connection

from channels_app.formats.conda import CondaFormat
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    read_repodata,
    repodata_entry,
    write_repodata,
)

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA_OLD = FakePackage("alpha", "1.0")  # noarch .tar.bz2
ALPHA = FakePackage("alpha", "1.1")  # noarch .tar.bz2, the newest alpha
BETA = FakePackage(  # linux-64 .conda needing alpha
    "beta", "2.0", build="h1a2b_3", subdir="linux-64", depends=["alpha >=1"], fmt=".conda"
)
PACKAGES = [ALPHA_OLD, ALPHA, BETA]
PACKAGE_SUFFIXES = (".tar.bz2", ".conda")
TIMEOUT = 10


@pytest.fixture
def upstream_root(tmp_path) -> Path:
    return build_channel(tmp_path / "upstream", PACKAGES, subdirs=("noarch", "linux-64"))


@pytest.fixture
def upstream(upstream_root):
    with ChannelServer(upstream_root) as server:
        yield server


def _mirror(source_url: str, mode: str, **kwargs) -> Mirror:
    return MirrorFactory(
        source_url=source_url, mode=mode, options={"subdirs": ["linux-64"]}, **kwargs
    )


def _synced(run_mirror, mirror: Mirror) -> SyncRun:
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return run


def _repo_url(live_server, channel_path: str) -> str:
    return f"{live_server.url}/api/repo/{channel_path}/"


def _package_gets(server: ChannelServer) -> list[str]:
    """Paths of the package files (not index files) the server was asked for."""
    return [p for m, p in server.requests if m == "GET" and p.endswith(PACKAGE_SUFFIXES)]


def _install(channel_url: str, specs: list[str], work: Path) -> list[rattler.RepoDataRecord]:
    """Solve `specs` from `channel_url` and install them into `work/env`, with caches of
    their own under `work` (so nothing is reused from an earlier install)."""

    async def solve_and_install() -> list[rattler.RepoDataRecord]:
        records = await rattler.solve(
            sources=[channel_url],
            specs=specs,
            platforms=["linux-64", "noarch"],
            gateway=rattler.Gateway(cache_dir=work / "repodata-cache"),
        )
        await rattler.install(
            records,
            target_prefix=work / "env",
            cache_dir=work / "pkgs",
            platform=rattler.Subdir("linux-64"),
            show_progress=False,
        )
        return records

    return asyncio.run(solve_and_install())


def _assert_installed_from(records, channel_url: str, work: Path, *expected: FakePackage) -> None:
    """The solution is exactly `expected`, every file came from `channel_url`, and the
    payloads are in the prefix."""
    assert sorted(r.file_name for r in records) == sorted(p.filename for p in expected)
    for record in records:
        assert record.url.startswith(channel_url), record.url
        assert urlsplit(record.url).netloc == urlsplit(channel_url).netloc
    for pkg in expected:
        for path, data in pkg.payload.items():
            assert (work / "env" / path).read_bytes() == data
        assert (work / "env" / "conda-meta" / f"{pkg.stem}.json").is_file()


def _get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=TIMEOUT)


# --- installing from mirrors ------------------------------------------------------------------


def test_active_mirror_installs_from_psm_without_touching_upstream(
    upstream, run_mirror, live_server, tmp_path
):
    mirror = _mirror(upstream.url, Mirror.Mode.ACTIVE)
    run = _synced(run_mirror, mirror)
    assert run.downloaded == 3
    synced_requests = len(upstream.requests)

    url = _repo_url(live_server, mirror.channel.path)
    records = _install(url, ["beta"], tmp_path / "one")

    _assert_installed_from(records, url, tmp_path / "one", ALPHA, BETA)
    assert (tmp_path / "one/env/share/alpha/alpha.txt").read_bytes() == b"alpha-1.1-0\n"
    assert upstream.requests[synced_requests:] == []  # PSM alone served the install


def test_passive_mirror_fetches_each_file_from_upstream_once(
    upstream, run_mirror, live_server, tmp_path
):
    mirror = _mirror(upstream.url, Mirror.Mode.PASSIVE)
    run = _synced(run_mirror, mirror)
    assert run.downloaded == 0
    assert _package_gets(upstream) == []  # nothing fetched before a client asks

    url = _repo_url(live_server, mirror.channel.path)
    records = _install(url, ["beta"], tmp_path / "one")
    _assert_installed_from(records, url, tmp_path / "one", ALPHA, BETA)
    assert sorted(_package_gets(upstream)) == [
        f"/linux-64/{BETA.filename}",
        f"/noarch/{ALPHA.filename}",
    ]

    # A second client with empty caches gets the now-stored files from PSM alone.
    records = _install(url, ["beta"], tmp_path / "two")
    _assert_installed_from(records, url, tmp_path / "two", ALPHA, BETA)
    assert len(_package_gets(upstream)) == 2


@pytest.mark.parametrize("second_mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_psm_channel_can_be_the_source_of_another_mirror(
    upstream, run_mirror, live_server, tmp_path, second_mode
):
    first = _mirror(upstream.url, Mirror.Mode.PASSIVE)
    _synced(run_mirror, first)
    # No subdirs option: the second mirror learns them from PSM's own channeldata.json.
    second = MirrorFactory(
        source_url=live_server.url + f"/api/repo/{first.channel.path}", mode=second_mode
    )
    run = _synced(run_mirror, second)
    assert run.seen == 3 and run.ingested == 3
    assert run.downloaded == (3 if second_mode == Mirror.Mode.ACTIVE else 0)
    upstream_gets = len(_package_gets(upstream))

    url = _repo_url(live_server, second.channel.path)
    records = _install(url, ["beta"], tmp_path / "client")

    _assert_installed_from(records, url, tmp_path / "client", ALPHA, BETA)
    # Each file crossed from upstream into PSM once, whichever mirror pulled it through.
    gets = _package_gets(upstream)
    assert len(gets) == len(set(gets))
    if second_mode == Mirror.Mode.ACTIVE:
        assert len(gets) == upstream_gets == 3
    else:
        assert sorted(gets) == [f"/linux-64/{BETA.filename}", f"/noarch/{ALPHA.filename}"]


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a publish patches its log where it splices"
)
def test_a_mirror_of_a_psm_channel_reads_what_changed_from_its_log(
    upstream, upstream_root, run_mirror, live_server, monkeypatch
):
    """PSM serves each subdir's repodata.jlap: a mirror of a PSM channel (or a conda client
    that reads logs) re-reads a changed subdir from the patch the publish added, not from the
    whole document, and ends with the same index."""
    first = _mirror(upstream.url, Mirror.Mode.PASSIVE)
    _synced(run_mirror, first)
    source = live_server.url + f"/api/repo/{first.channel.path}"
    second = MirrorFactory(source_url=source, mode=Mirror.Mode.PASSIVE)
    _synced(run_mirror, second)

    # Upstream changes: a package added to linux-64, one removed from noarch.
    linux = read_repodata(upstream_root, "linux-64")
    linux["packages"]["gamma-1.0-0.tar.bz2"] = repodata_entry("gamma", "1.0")
    write_repodata(upstream_root, "linux-64", linux)
    noarch = read_repodata(upstream_root, "noarch")
    del noarch["packages"][ALPHA_OLD.filename]
    write_repodata(upstream_root, "noarch", noarch)
    _synced(run_mirror, first)

    read_from_logs = []
    real = CondaFormat.read_patched

    def spied(self, fileobj, url, *args):
        entries = real(self, fileobj, url, *args)
        read_from_logs.append((url.rsplit("/", 2)[-2], entries is not None))
        return entries

    monkeypatch.setattr(CondaFormat, "read_patched", spied)
    run = _synced(run_mirror, second)
    assert sorted(read_from_logs) == [("linux-64", True), ("noarch", True)]
    assert run.ingested == 1  # gamma; alpha 1.0 removed
    for subdir in ("noarch", "linux-64"):
        served = [
            _get(_repo_url(live_server, mirror.channel.path) + f"{subdir}/repodata.json").json()
            for mirror in (first, second)
        ]
        assert served[0] == served[1]
    assert "gamma-1.0-0.tar.bz2" in served[1]["packages"]
    noarch_served = _get(_repo_url(live_server, second.channel.path) + "noarch/repodata.json")
    assert ALPHA_OLD.filename not in noarch_served.json()["packages"]


def test_subchannel_is_installable_under_its_parent(upstream, run_mirror, live_server, tmp_path):
    parent = ChannelFactory(name="corp")
    sub = ChannelFactory(name="tools", parent=parent)
    mirror = _mirror(upstream.url, Mirror.Mode.PASSIVE, channel=sub)
    _synced(run_mirror, mirror)

    url = _repo_url(live_server, "corp/tools")
    records = _install(url, ["beta"], tmp_path / "client")

    _assert_installed_from(records, url, tmp_path / "client", ALPHA, BETA)
    # The parent holds nothing of its own: the packages are the subchannel's alone.
    parent_index = _get(_repo_url(live_server, "corp") + "noarch/repodata.json")
    assert parent_index.status_code == 200
    assert parent_index.json()["packages"] == {}
    assert _get(_repo_url(live_server, "corp") + "channeldata.json").json()["packages"] == {}
    assert _get(_repo_url(live_server, "corp") + f"linux-64/{BETA.filename}").status_code == 404


def test_hotfixed_upstream_metadata_is_served_verbatim_and_used_by_the_solver(
    upstream, upstream_root, run_mirror, live_server, tmp_path
):
    # A repodata patch, as conda-forge does: beta's depends tightened after indexing.
    repodata = read_repodata(upstream_root, "linux-64")
    record = repodata["packages.conda"][BETA.filename]
    record["depends"] = ["alpha >=1,<1.1"]
    write_repodata(upstream_root, "linux-64", repodata)
    mirror = _mirror(upstream.url, Mirror.Mode.PASSIVE)
    _synced(run_mirror, mirror)

    url = _repo_url(live_server, mirror.channel.path)
    served = _get(url + "linux-64/repodata.json").json()
    assert served["packages.conda"] == {BETA.filename: record}
    assert served["packages.conda"][BETA.filename]["depends"] == ["alpha >=1,<1.1"]

    records = _install(url, ["beta"], tmp_path / "client")
    _assert_installed_from(records, url, tmp_path / "client", ALPHA_OLD, BETA)
    assert next(r for r in records if r.name.normalized == "beta").depends == ["alpha >=1,<1.1"]
    meta = json.loads((tmp_path / f"client/env/conda-meta/{BETA.stem}.json").read_bytes())
    assert meta["depends"] == ["alpha >=1,<1.1"]


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_file_names_with_epoch_and_local_version_install(run_mirror, live_server, tmp_path, mode):
    # "!" and "+" are percent-encoded on the way upstream and back; the file must survive both.
    odd = FakePackage("odd", "1!2.0+cpu", build="py_0")
    root = build_channel(tmp_path / "odd-upstream", [odd])
    with ChannelServer(root) as server:
        mirror = _mirror(server.url, mode)
        _synced(run_mirror, mirror)
        url = _repo_url(live_server, mirror.channel.path)
        records = _install(url, ["odd"], tmp_path / "client")

        _assert_installed_from(records, url, tmp_path / "client", odd)
        assert _package_gets(server) == ["/noarch/odd-1%212.0%2Bcpu-py_0.tar.bz2"]


# --- index and package files over HTTP ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("repodata.json", "application/json"), ("repodata.json.zst", "application/zstd")],
)
def test_index_files_have_validators_and_answer_304(
    upstream, run_mirror, live_server, settings, name, content_type
):
    mirror = _mirror(upstream.url, Mirror.Mode.ACTIVE)
    _synced(run_mirror, mirror)
    url = _repo_url(live_server, mirror.channel.path) + f"noarch/{name}"

    got = _get(url)
    assert got.status_code == 200
    assert got.headers["Content-Type"] == content_type
    assert got.headers["Cache-Control"] == f"public, max-age={settings.PSM_INDEX_MAX_AGE}"
    assert got.headers["Content-Length"] == str(len(got.content))
    etag = got.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 66
    assert "Last-Modified" in got.headers

    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["ETag"] == etag
    assert head.headers["Content-Length"] == str(len(got.content))
    assert head.headers["Cache-Control"] == got.headers["Cache-Control"]

    for method in (requests.get, requests.head):
        cached = method(url, headers={"If-None-Match": etag}, timeout=TIMEOUT)
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["ETag"] == etag
        assert cached.headers["Cache-Control"] == got.headers["Cache-Control"]
    assert _get(url, **{"If-None-Match": '"something-else"'}).status_code == 200
    assert _get(url, **{"If-Modified-Since": got.headers["Last-Modified"]}).status_code == 304


def test_zst_index_decompresses_to_the_plain_index(upstream, run_mirror, live_server):
    mirror = _mirror(upstream.url, Mirror.Mode.ACTIVE)
    _synced(run_mirror, mirror)
    base = _repo_url(live_server, mirror.channel.path)
    for subdir, pkgs in [("noarch", [ALPHA_OLD, ALPHA]), ("linux-64", [BETA])]:
        plain = _get(base + f"{subdir}/repodata.json")
        packed = _get(base + f"{subdir}/repodata.json.zst")
        assert plain.status_code == packed.status_code == 200
        unpacked = zstandard.ZstdDecompressor().decompressobj().decompress(packed.content)
        assert unpacked == plain.content
        document = json.loads(unpacked)
        assert document["info"]["subdir"] == subdir
        listed = {**document["packages"], **document["packages.conda"]}
        assert sorted(listed) == sorted(p.filename for p in pkgs)
        assert "base_url" not in document["info"]  # package URLs stay relative, i.e. on PSM
        assert plain.headers["ETag"] != packed.headers["ETag"]


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_package_file_honours_range_requests(
    upstream, upstream_root, run_mirror, live_server, mode
):
    mirror = _mirror(upstream.url, mode)
    _synced(run_mirror, mirror)
    url = _repo_url(live_server, mirror.channel.path) + f"linux-64/{BETA.filename}"
    data = (upstream_root / "linux-64" / BETA.filename).read_bytes()

    part = _get(url, Range="bytes=0-9")
    assert part.status_code == 206
    assert part.content == data[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(data)}"
    assert part.headers["Content-Length"] == "10"
    assert part.headers["Accept-Ranges"] == "bytes"
    assert part.headers["Cache-Control"] == "public, max-age=31536000, immutable"

    whole = _get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["ETag"] == part.headers["ETag"]
    assert _get(url, Range="bytes=-5").content == data[-5:]
    assert upstream.count(f"/linux-64/{BETA.filename}") == 1

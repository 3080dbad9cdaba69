"""An unchanged source costs one conditional request per index document, for every format.

Each source is a loopback upstream in its real format that logs every answer; a mirror runs
twice through the real run path, and the second run may only revalidate: every request
conditional, every answer a 304, no body fetched.
"""

from __future__ import annotations

import pytest

from mirrors_app.models import SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index

pytestmark = pytest.mark.django_db


def _conda(tmp_path):
    packages = [FakePackage("alpha", "1.0"), FakePackage("beta", "2.0", subdir="linux-64")]
    server = ChannelServer(build_channel(tmp_path / "conda", packages))
    # No `subdirs` option: channeldata.json says which subdirs there are.
    documents = ["/channeldata.json", "/linux-64/repodata.json.zst", "/noarch/repodata.json.zst"]
    return server, {"kind": "conda", "source_url": server.url, "options": {}}, documents


def _pypi(tmp_path, **flavour):
    dists = [FakeDist("alpha", "1.0"), FakeDist("beta", "0.5")]
    server = IndexServer(build_index(tmp_path / "pypi", dists), **flavour)
    return server, {"kind": "pypi", "source_url": server.index_url, "options": {}}


def _pypi_json(tmp_path):
    server, mirror = _pypi(tmp_path, json_only=True)
    # The project list gives every project's serial: unchanged projects are not asked.
    return server, mirror, ["/simple/"]


def _pypi_html(tmp_path):
    server, mirror = _pypi(tmp_path, html_only=True)
    # No serials in an HTML list: each project page is revalidated.
    return server, mirror, ["/simple/", "/simple/alpha/", "/simple/beta/"]


def _cran(tmp_path):
    packages = [RPackage("alpha", "1.0"), RPackage("gamma", "0.2")]
    root = build_repo(tmp_path / "cran", packages, archived=[RPackage("gamma", "0.1")])
    server = CranServer(root)
    mirror = {"kind": "cran", "source_url": server.url, "options": {"archive": True}}
    # alpha has no Archive folder: its 404 is remembered, not asked again.
    return server, mirror, ["/src/contrib/Archive/gamma/", "/src/contrib/PACKAGES.gz"]


@pytest.mark.parametrize(
    "source", [_conda, _pypi_json, _pypi_html, _cran], ids=["conda", "pypi-json", "pypi-html", "r"]
)
def test_an_unchanged_source_costs_one_304_per_index_document(tmp_path, run_mirror, source):
    server, fields, documents = source(tmp_path)
    with server:
        mirror = MirrorFactory(channel=ChannelFactory(kind=fields["kind"]), **fields)
        first = run_mirror(mirror)
        assert first.state == SyncRun.State.COMPLETED, first.error
        assert first.ingested > 0
        server.answers.clear()
        second = run_mirror(mirror)
    assert second.state == SyncRun.State.COMPLETED, second.error
    assert second.ingested == 0
    assert sorted(server.answers) == [("GET", path, 304, True) for path in documents]

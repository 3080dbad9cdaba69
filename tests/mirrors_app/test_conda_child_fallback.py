"""A conda re-sync whose child process (`channels_app/formats/isolation.py`) answers garbage:
the run digests the section itself and ends as it would have with a healthy child."""

from __future__ import annotations

import orjson
import pytest

from channels_app.formats import conda_repodata
from mirrors_app import sync
from mirrors_app.models import Mirror, SyncRun
from tests.factories import MirrorFactory
from tests.fixtures.child_faults import print_banner_in_children
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    read_repodata,
    write_repodata,
)
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

PACKAGES = [
    FakePackage("alpha", "1.0", subdir="linux-64"),
    FakePackage("beta", "2.0", subdir="linux-64", fmt=".conda", depends=["alpha >=1"]),
    FakePackage("gamma", "0.1", subdir="linux-64"),
]


@pytest.fixture
def source(tmp_path):
    root = build_channel(tmp_path / "upstream", PACKAGES)
    with ChannelServer(root) as server:
        yield server


def _served(client, mirror: Mirror, path: str) -> dict:
    response = client.get(f"/api/repo/{mirror.channel.path}/{path}")
    assert response.status_code == 200
    return orjson.loads(response_body(response))


def test_a_child_whose_pipe_carries_garbage_leaves_the_check_to_the_run(
    source, run_mirror, client, monkeypatch, tmp_path
):
    # Every re-sync is split across both processes (none compares with a kept document).
    monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(conda_repodata, "PARALLEL_FROM", 1)
    monkeypatch.setattr(sync, "document_kept", lambda mirror_id, unit, live_rows=None: None)
    site = print_banner_in_children(tmp_path, monkeypatch)
    mirror = MirrorFactory(
        source_url=source.url, mode=Mirror.Mode.PASSIVE, options={"subdirs": ["linux-64"]}
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert (run.seen, run.ingested, run.warnings) == (3, 3, "")
    upstream = read_repodata(source.root, "linux-64")
    served = _served(client, mirror, "linux-64/repodata.json")
    assert served["packages"] == upstream["packages"]
    assert served["packages.conda"] == upstream["packages.conda"]
    started = site / "started"
    first_children = len(started.read_text().split()) if started.exists() else 0

    upstream["packages.conda"][PACKAGES[1].filename]["depends"] = ["alpha >=1,<2"]
    del upstream["packages"][PACKAGES[2].filename]
    write_repodata(source.root, "linux-64", upstream)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert (run.seen, run.ingested, run.warnings) == (2, 1, "")  # beta changed, gamma gone
    served = _served(client, mirror, "linux-64/repodata.json")
    assert served["packages.conda"] == upstream["packages.conda"]
    assert served["packages"] == upstream["packages"]
    # The child did start (and printed into its pipe).
    assert len(started.read_text().split()) > first_children

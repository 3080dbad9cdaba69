"""Conda mirrors end to end: a real fixture channel on loopback, synced into PSM, served back."""

from __future__ import annotations

import orjson
import pytest

from channels_app.models import Package, PublishedFile
from mirrors_app.models import Mirror, SyncRun
from tests.factories import MirrorFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel, read_repodata
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

PACKAGES = [
    FakePackage("alpha", "1.0"),
    FakePackage("beta", "2.0", subdir="linux-64", fmt=".conda", depends=["alpha >=1"]),
    FakePackage("gamma", "0.1", subdir="linux-64"),
]


@pytest.fixture
def source(tmp_path):
    root = build_channel(tmp_path / "upstream", PACKAGES)
    with ChannelServer(root) as server:
        yield server


def _mirror(server, mode=Mirror.Mode.PASSIVE, **kwargs):
    return MirrorFactory(
        source_url=server.url, mode=mode, options={"subdirs": ["linux-64"]}, **kwargs
    )


def _served(client, channel, path):
    response = client.get(f"/api/repo/{channel.path}/{path}")
    body = response_body(response)
    return response, body


@pytest.fixture(params=["in-process", "checked-in-a-child"])
def check_in(request):
    """Each way a first sync checks an index: in this process, or in a child process as
    conda-forge-sized ones are."""
    if request.param == "checked-in-a-child":
        request.getfixturevalue("split_resyncs")
    return request.param


def test_passive_sync_publishes_upstream_records_verbatim(source, run_mirror, client, check_in):
    mirror = _mirror(source)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.seen == 3 and run.ingested == 3 and run.filtered == 0
    response, body = _served(client, mirror.channel, "linux-64/repodata.json")
    assert response.status_code == 200
    served = orjson.loads(body)
    upstream = read_repodata(source.root, "linux-64")
    assert served["packages"] == upstream["packages"]
    assert served["packages.conda"] == upstream["packages.conda"]
    response, body = _served(client, mirror.channel, "noarch/repodata.json")
    assert orjson.loads(body)["packages"] == read_repodata(source.root, "noarch")["packages"]
    assert Package.objects.filter(on_demand=True, artifact__isnull=True).count() == 3


def test_unchanged_upstream_costs_one_conditional_request_per_subdir(source, run_mirror):
    mirror = _mirror(source)
    run_mirror(mirror)
    published = set(PublishedFile.objects.values_list("artifact__sha256", flat=True))
    before = len(source.requests)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED
    assert run.ingested == 0
    fetched = [path for _, path in source.requests[before:] if "repodata" in path]
    assert len(fetched) == 2  # noarch and linux-64, each a 304
    assert set(PublishedFile.objects.values_list("artifact__sha256", flat=True)) == published


def test_active_sync_downloads_verified_files(source, run_mirror, client):
    mirror = _mirror(source, mode=Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.downloaded == 3
    filename = PACKAGES[1].filename
    response, body = _served(client, mirror.channel, f"linux-64/{filename}")
    assert response.status_code == 200
    assert body == (source.root / "linux-64" / filename).read_bytes()


def test_passive_file_is_fetched_on_first_request(source, run_mirror, client):
    mirror = _mirror(source)
    run_mirror(mirror)
    filename = PACKAGES[0].filename
    response, body = _served(client, mirror.channel, f"noarch/{filename}")
    assert response.status_code == 200
    assert body == (source.root / "noarch" / filename).read_bytes()
    response, body = _served(client, mirror.channel, f"noarch/{filename}")
    assert source.count(f"/noarch/{filename}") == 1


def test_source_with_a_token_in_its_path_syncs_and_never_shows_the_token(tmp_path, run_mirror):
    root = tmp_path / "served"
    build_channel(root / "t" / "s3cr3t-token" / "private", PACKAGES)
    with ChannelServer(root) as server:
        mirror = MirrorFactory(source_url=f"{server.url}/t/s3cr3t-token/private")
        run = run_mirror(mirror)
        assert run.state == SyncRun.State.COMPLETED, run.error
        assert run.ingested == 3
        (root / "t" / "s3cr3t-token" / "private" / "noarch" / "repodata.json.zst").write_bytes(
            b"not zstd"
        )
        mirror.units.all().delete()  # no conditional request: a full fetch
        run = run_mirror(mirror)
    assert "noarch" in run.warnings and "corrupt compressed data" in run.warnings
    assert "s3cr3t-token" not in run.warnings
    assert "/t/***/private" in run.warnings


def test_details_list_failed_downloads_with_their_reason(source, run_mirror):
    from mirrors_app.reports import mirror_details

    source.fail[f"/linux-64/{PACKAGES[2].filename}"] = 404
    mirror = _mirror(source, mode=Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED
    assert (run.downloaded, run.failed) == (2, 1)
    assert run.filtered_reasons == {"download failed: HTTP 404": 1}
    details = mirror_details(mirror)
    assert (details["packages_active"], details["packages_failed"]) == (2, 1)
    (failure,) = details["failures"]
    assert failure["path"] == f"linux-64/{PACKAGES[2].filename}"
    assert "HTTP 404" in failure["error"]


@pytest.fixture
def split_resyncs(monkeypatch):
    """Re-syncs of any size use the child process, as conda-forge-sized ones do whose last
    document is not kept (else they compare with it, see test_conda_kept_document)."""
    from channels_app.formats import conda_repodata
    from mirrors_app import sync

    monkeypatch.setattr(conda_repodata, "PARALLEL_FROM", 1)
    monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(sync, "document_kept", lambda mirror_id, unit, live_rows=None: None)


def test_resync_split_across_two_processes_matches_upstream(
    source, run_mirror, client, split_resyncs
):
    from tests.fixtures.conda_channel import write_repodata

    mirror = _mirror(source)
    run_mirror(mirror)
    document = read_repodata(source.root, "linux-64")
    document["packages.conda"][PACKAGES[1].filename]["depends"] = ["alpha >=1,<2"]
    del document["packages"][PACKAGES[2].filename]
    write_repodata(source.root, "linux-64", document)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert (run.seen, run.ingested) == (1, 1)  # noarch unchanged (304), gamma gone
    served = orjson.loads(_served(client, mirror.channel, "linux-64/repodata.json")[1])
    assert served["packages.conda"] == document["packages.conda"]
    assert served["packages"] == {}


def test_split_resync_takes_in_changed_and_new_entries_of_the_section_kept_back(
    source, run_mirror, client, split_resyncs
):
    from tests.fixtures.conda_channel import write_repodata

    mirror = _mirror(source)
    run_mirror(mirror)
    document = read_repodata(source.root, "linux-64")
    gamma = document["packages"][PACKAGES[2].filename]
    gamma["depends"] = ["alpha >=1"]
    # A new entry with a per-record URL (dropped from the record served back).
    document["packages"]["gamma-0.2-0.tar.bz2"] = {
        **gamma,
        "version": "0.2",
        "url": "https://elsewhere.example/gamma-0.2-0.tar.bz2",
    }
    write_repodata(source.root, "linux-64", document)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.ingested == 2
    served = orjson.loads(_served(client, mirror.channel, "linux-64/repodata.json")[1])
    del document["packages"]["gamma-0.2-0.tar.bz2"]["url"]
    assert served["packages"] == document["packages"]
    assert served["packages.conda"] == document["packages.conda"]


def test_split_resync_of_a_truncated_index_writes_nothing(source, run_mirror, split_resyncs):
    mirror = _mirror(source)
    run_mirror(mirror)
    before = list(Package.objects.values_list("filename", "entry_digest", "removed"))
    path = source.root / "linux-64" / "repodata.json"
    (source.root / "linux-64" / "repodata.json.zst").unlink()
    path.write_bytes(path.read_bytes()[:-40])
    run = run_mirror(mirror)
    assert "linux-64" in run.warnings and "not valid JSON" in run.warnings
    assert list(Package.objects.values_list("filename", "entry_digest", "removed")) == before


def test_first_sync_checked_in_a_child_takes_in_nothing_of_a_truncated_index(
    source, run_mirror, split_resyncs
):
    path = source.root / "linux-64" / "repodata.json"
    (source.root / "linux-64" / "repodata.json.zst").unlink()
    path.write_bytes(path.read_bytes()[:-40])
    run = run_mirror(_mirror(source))
    assert "linux-64" in run.warnings and "not valid JSON" in run.warnings
    assert not Package.objects.filter(unit="linux-64").exists()


def test_first_sync_checked_in_a_child_rejects_bad_entries_and_keeps_urls_as_sources(
    source, run_mirror, client, split_resyncs
):
    from tests.fixtures.conda_channel import write_repodata

    document = read_repodata(source.root, "linux-64")
    gamma = document["packages"][PACKAGES[2].filename]
    document["packages"]["../evil-1.0-0.tar.bz2"] = gamma
    document["packages"]["gamma-0.2-0.tar.bz2"] = {
        **gamma,
        "version": "0.2",
        "url": "https://elsewhere.example/gamma-0.2-0.tar.bz2",
    }
    write_repodata(source.root, "linux-64", document)
    mirror = _mirror(source)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered_reasons == {"unsafe file name": 1}
    served = orjson.loads(_served(client, mirror.channel, "linux-64/repodata.json")[1])
    del document["packages"]["../evil-1.0-0.tar.bz2"]
    del document["packages"]["gamma-0.2-0.tar.bz2"]["url"]
    assert served["packages"] == document["packages"]
    assert served["packages.conda"] == document["packages.conda"]
    assert Package.objects.get(filename="gamma-0.2-0.tar.bz2").upstream_url == (
        "https://elsewhere.example/gamma-0.2-0.tar.bz2"
    )


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "checked-in-a-child"])
def test_unknown_top_level_keys_are_served_back_but_package_sections_never(
    source, run_mirror, client, monkeypatch, tmp_path, in_child
):
    import rattler

    from channels_app.formats import conda_document, conda_repodata
    from tests.fixtures.conda_channel import write_repodata

    if in_child:
        monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
    sneaky = {"name": "sneaky", "version": "1.0", "build": "0", "build_number": 0}
    sneaky |= {"depends": [], "subdir": "linux-64", "sha256": "0" * 64, "size": 1}
    kept = {
        "signatures": {PACKAGES[2].filename: {"f00d": {"signature": "abc"}}},
        "x_future": [1, "two", {"three": 3.5, "nested": _nested(5)}],
        "x_flag": True,
        "x_empty": {},
    }
    original = read_repodata(source.root, "linux-64")  # rattler's index writes "v3": {}
    document = original | kept
    document |= {
        # Experimental repodata v3: rattler installs from its sections, wheels from PyPI.
        "v3": {
            "conda": {"sneaky-1.0-0.conda": sneaky},
            "whl": {"sneaky-1.0-py3-none-any.whl": sneaky | {"url": "https://pypi.example/s"}},
        },
        "packages.whl": {"sneaky-1.0-py3-none-any.whl": sneaky},
        "x_records": {"hidden": [{"sneaky-1.0-0.conda": sneaky}]},
        "x_huge": {"blob": "x" * conda_document.EXTRA_KEYS_BYTES},
        "x_deep": _nested(conda_document.EXTRA_KEYS_DEPTH + 5),
    }
    write_repodata(source.root, "linux-64", document)
    mirror = _mirror(source)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.ingested == 3
    assert run.filtered_reasons == {
        conda_document.SECTION_LEFT_OUT: 2,
        "unknown top-level key holding package records": 1,
        "unknown top-level keys past 1024 KiB": 1,
        "unknown top-level key nested too deeply": 1,
    }
    body = _served(client, mirror.channel, "linux-64/repodata.json")[1]
    served = orjson.loads(body)
    assert {key: served[key] for key in kept} == kept  # verbatim
    assert not served.keys() & {"v3", "packages.whl", "x_records", "x_huge", "x_deep"}
    # What a client reads from PSM (py-rattler also reads v3): only the records PSM checked.
    (tmp_path / "repodata.json").write_bytes(body)
    records = rattler.RepoData.from_path(tmp_path / "repodata.json").into_repo_data(
        rattler.Channel("http://psm.invalid/channel")
    )
    assert sorted(r.name.normalized for r in records) == ["beta", "gamma"]
    # The extras are per unit and follow upstream: once the keys are gone, so are they.
    write_repodata(source.root, "linux-64", original)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED and run.filtered_reasons == {}
    served = orjson.loads(_served(client, mirror.channel, "linux-64/repodata.json")[1])
    assert not served.keys() & {*kept, "v3"}

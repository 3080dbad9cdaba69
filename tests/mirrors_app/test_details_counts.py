"""What the details page says is true: for conda, Python and R, active and passive, with
filters or a policy, every file the source offers is counted once, in one state; each count is
the length of the list behind it; and a re-run that finds nothing new changes nothing and says
it did nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    read_repodata,
    write_repodata,
)
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo
from tests.fixtures.http import response_body
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index

pytestmark = pytest.mark.django_db

STATES = ("stored", "cached", "waiting", "not_downloaded", "failed", "excluded")


@dataclass
class Source:
    """A fixture upstream with: `allowed` files that enter (`bad` among them, whose bytes do
    not match its index entry, and `good`, a sound one), one file kept out by a filter or the
    policy (`filtered_reason`) and one invalid index entry (`rejected_reason`)."""

    server: object
    kind: str
    options: dict
    policy: dict | None
    allowed: int
    good: str  # URL path inside the channel
    bad: str
    filtered_reason: str
    rejected_reason: str

    @property
    def offered(self) -> int:
        return self.allowed + 2

    @property
    def bad_path(self) -> str:
        """`unit/filename`, as the details list it (a Python file's unit is its project)."""
        return self.bad.removeprefix("files/")


def _damage(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"tampered")


def _conda(tmp_path: Path) -> Source:
    root = build_channel(
        tmp_path / "conda",
        [
            FakePackage("alpha", "1.0"),
            FakePackage("alpha", "2.0"),
            FakePackage("beta", "1.0", subdir="linux-64"),
            FakePackage("gamma", "1.0", subdir="linux-64"),
        ],
    )
    document = read_repodata(root, "linux-64")
    record = document["packages"]["beta-1.0-0.tar.bz2"]
    document["packages"]["../evil-1.0-0.tar.bz2"] = {**record, "name": "evil"}
    write_repodata(root, "linux-64", document)
    _damage(root / "noarch" / "alpha-1.0-0.tar.bz2")
    return Source(
        ChannelServer(root),
        "conda",
        {},
        {"block_specs": ["gamma"]},
        allowed=3,
        good="noarch/alpha-2.0-0.tar.bz2",
        bad="noarch/alpha-1.0-0.tar.bz2",
        filtered_reason="blocked by package rule 'gamma'",
        rejected_reason="unsafe file name",
    )


def _pypi(tmp_path: Path) -> Source:
    root = build_index(
        tmp_path / "pypi",
        [
            FakeDist("alpha", "1.0"),
            FakeDist("alpha", "2.0"),
            FakeDist("alpha", "2.0", kind="sdist"),
            FakeDist("beta", "0.5"),
        ],
    )
    page = root / "simple" / "beta" / "index.json"
    document = json.loads(page.read_bytes())
    unverifiable = {**document["files"][0], "filename": "beta-0.6-py3-none-any.whl", "hashes": {}}
    document["files"].append(unverifiable)
    page.write_text(json.dumps(document))
    _damage(root / "files" / "alpha-1.0-py3-none-any.whl")
    server = IndexServer(root, json_only=True)
    return Source(
        server,
        "pypi",
        {"package_types": ["wheel"]},
        None,
        allowed=3,
        good="files/alpha/alpha-2.0-py3-none-any.whl",
        bad="files/alpha/alpha-1.0-py3-none-any.whl",
        filtered_reason="package type sdist not mirrored",
        rejected_reason="no sha256 hash",
    )


def _cran(tmp_path: Path) -> Source:
    root = build_repo(
        tmp_path / "cran",
        [
            RPackage("alpha", "1.0"),
            RPackage("beta", "2.0"),
            RPackage("gamma", "0.1"),
            RPackage("delta", "3.0", license="Apache License (== 2.0)"),
        ],
    )
    for name in ("PACKAGES", "PACKAGES.gz"):
        index = root / "src" / "contrib" / name
        stanza = b"\nPackage: zeta\nVersion: 1.0\nLicense: MIT\nMD5sum: not-a-digest\n"
        if name.endswith(".gz"):
            import gzip

            index.write_bytes(gzip.compress(gzip.decompress(index.read_bytes()) + stanza))
        else:
            index.write_bytes(index.read_bytes() + stanza)
    _damage(root / "src" / "contrib" / "alpha_1.0.tar.gz")
    return Source(
        CranServer(root),
        "cran",
        {"exclude_licenses": ["APACHE"]},
        None,
        allowed=3,
        good="src/contrib/beta_2.0.tar.gz",
        bad="src/contrib/alpha_1.0.tar.gz",
        filtered_reason="license excluded",
        rejected_reason="malformed MD5sum",
    )


SOURCES = {"conda": _conda, "pypi": _pypi, "cran": _cran}


def _files(api_client, mirror: Mirror, state: str) -> tuple[int, list[dict]]:
    """(count, every row) of a state's list, read page by page."""
    url = f"/api/mirrors/{mirror.pk}/files/?state={state}&limit=2"
    rows, count = [], None
    while url:
        page = api_client.get(url).json()
        count = page["count"] if count is None else count
        rows += page["results"]
        url = page["next"]
    return count, rows


def _check_counts(api_client, mirror: Mirror, source: Source) -> dict:
    details = api_client.get(f"/api/mirrors/{mirror.pk}/details/").json()
    counts = details["packages"]
    for state in STATES:
        count, rows = _files(api_client, mirror, state)
        assert count == len(rows) == counts[state], state
    assert sum(counts[state] for state in STATES) == counts["offered"] == source.offered
    assert sum(details["excluded_by_reason"].values()) == counts["excluded"]
    assert details["excluded_by_reason"] == {source.filtered_reason: 1, source.rejected_reason: 1}
    assert [f["path"] for f in details["failures"]] == [source.bad_path]
    assert details["failures"][0]["error"] and details["failures"][0]["at"]
    return counts


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
@pytest.mark.parametrize("kind", list(SOURCES))
def test_details_count_every_offered_file_once_and_match_their_lists(
    kind, mode, tmp_path, run_mirror, api_client, client, make_user
):
    source = SOURCES[kind](tmp_path)
    with source.server:
        policy = PolicyFactory(**source.policy) if source.policy else None
        mirror = MirrorFactory(
            channel=ChannelFactory(kind=kind, policy=policy),
            kind=kind,
            mode=mode,
            source_url=source.server.url if kind != "pypi" else source.server.index_url,
            options=source.options,
        )
        first = run_mirror(mirror)
        assert first.state == SyncRun.State.COMPLETED, first.error
        if mode == Mirror.Mode.PASSIVE:
            for path, status in ((source.good, 200), (source.bad, 502)):
                response = client.get(f"/api/repo/{mirror.channel.path}/{path}")
                if response.streaming:
                    response_body(response)
                assert response.status_code == status, path
        api_client.force_authenticate(make_user("mirrors_app.view_mirror"))
        counts = _check_counts(api_client, mirror, source)
        if mode == Mirror.Mode.ACTIVE:
            expected = {"stored": source.allowed - 1, "cached": 0, "waiting": 0}
        else:
            expected = {"stored": 0, "cached": 1, "waiting": source.allowed - 2}
        expected.update(not_downloaded=0, failed=1, excluded=2)
        assert {state: counts[state] for state in STATES} == expected

        again = run_mirror(mirror)  # the source did not change
        assert again.state == SyncRun.State.COMPLETED, again.error
        assert (again.seen, again.ingested, again.filtered) == (0, 0, 0)
        # An active run tries the failed download again: that failure is this run's work.
        retried = 1 if mode == Mirror.Mode.ACTIVE else 0
        assert (again.failed, sum(again.filtered_reasons.values())) == (retried, retried)
        assert _check_counts(api_client, mirror, source) == counts

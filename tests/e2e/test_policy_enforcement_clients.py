"""Real clients stop getting what a newly loaded advisory blocks, and get it back after a waiver.

Each test mirrors a loopback fixture repository (active mode: every file stored in PSM), serves
the channel over real HTTP (``live_server``) and installs from it with the real client of its
ecosystem: pip (isolated as in test_pypi_clients), R's ``install.packages`` and py-rattler. Then
it loads OSV advisories in the real format (tests/fixtures/osv/pypi, tests/fixtures/osv/cran),
re-decides the mirrors without a sync, and checks what the client gets now, that the blocked
file is refused, and that the upstream saw no request meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from urllib.parse import urljoin

import pytest
import rattler
import requests
from django.utils import timezone

from channels_app.models import Package
from mirrors_app.models import Mirror, SyncRun
from mirrors_app.sync import policy as sync_policy
from policies_app import services
from policies_app.enforcement import enforce
from policies_app.models import NameMapping, Policy, Waiver
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo, rscript, rscript_install
from tests.fixtures.loopback import LoopbackServer
from tests.fixtures.pypi_index import JSON, FakeDist, IndexServer, build_index, pip_install

pytestmark = pytest.mark.django_db(transaction=True)

OSV = Path(__file__).parents[1] / "fixtures" / "osv"
TIMEOUT = 10
needs_r = pytest.mark.skipif(
    rscript() is None,
    reason="R is not installed (Rscript not on PATH; scripts/test.sh installs r-base-core "
    "with apt where it can)",
)


# --- helpers --------------------------------------------------------------------------------


def _enforce() -> None:
    """Re-decide every mirror's stored packages and publish its channel, as the task queued by
    an advisory load or a waiver does (run here, in the test's process)."""
    enforce(trigger="test")


def _enforce_offline(upstream: LoopbackServer) -> None:
    """`_enforce`, checking that it asked the upstream nothing (no sync, no download)."""
    seen = len(upstream.requests)
    _enforce()
    assert upstream.requests[seen:] == []


def _load(ecosystem: str) -> None:
    result = services.vulnerabilities_load(path=OSV / ecosystem)
    assert result.errors == [] and result.created > 0, str(result)


def _synced(run_mirror, channel, source_url: str, **options) -> Mirror:
    mirror = MirrorFactory(
        channel=channel,
        kind=channel.kind,
        mode=Mirror.Mode.ACTIVE,
        source_url=source_url,
        options=options,
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.failed == 0
    return mirror


def _waive(policy: Policy, spec: str, rule: str) -> Waiver:
    """A waiver as the admin would save it (validated), for a month."""
    waiver = Waiver(
        policy=policy,
        spec=spec,
        rule=rule,
        reason="only used behind our egress proxy; upgrade tracked in SEC-1234",
        expires_at=timezone.now() + dt.timedelta(days=30),
        created_by_name="security-team",
    )
    waiver.full_clean()
    waiver.save()
    return waiver


def _reason(channel, filename: str) -> str:
    return Package.objects.get(channel=channel, filename=filename).excluded_reason


def _explained(channel, name: str, version: str = "") -> dict:
    """The decision on one stored file of the channel's only mirror ("test a package")."""
    report = sync_policy.test_package(channel=channel, name=name, version=version)
    [result] = report["results"]
    [decision] = result["files"]
    return result | decision


def _get(url: str) -> requests.Response:
    return requests.get(url, timeout=TIMEOUT)


# --- pip --------------------------------------------------------------------------------------

URLLIB3_OLD = FakeDist("urllib3", "1.26.18", upload_time="2023-10-17T19:03:45.000000Z")
URLLIB3_NEW = FakeDist("urllib3", "2.0.5", upload_time="2023-09-20T15:24:22.000000Z")


def _pip_gets(index: str, requirement: str, target: Path) -> str:
    """The urllib3 version pip installs for `requirement` from `index` alone."""
    result = pip_install(index, [requirement], target)
    assert result.returncode == 0, result.stdout + result.stderr
    [dist_info] = target.glob("urllib3-*.dist-info")
    return dist_info.name.removeprefix("urllib3-").removesuffix(".dist-info")


def _file_urls(page_url: str) -> dict[str, str]:
    page = requests.get(page_url, headers={"Accept": JSON}, timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    return {f["filename"]: urljoin(page_url, f["url"]) for f in page.json()["files"]}


def test_pip_loses_a_version_an_advisory_blocks_and_a_waiver_brings_it_back(
    run_mirror, live_server, tmp_path
):
    # "Keep only packages whose worst advisory scores below 5": GHSA-v845 (5.9) affects 2.0.5;
    # PYSEC-2023-212 (4.2) affects it too but passes; neither affects 1.26.18.
    policy = PolicyFactory(package_type="pypi", cve_score=Decimal("5.0"), cve_score_comparator="<")
    channel = ChannelFactory(kind="pypi", policy=policy)
    with IndexServer(build_index(tmp_path / "index", [URLLIB3_OLD, URLLIB3_NEW])) as upstream:
        _synced(run_mirror, channel, upstream.index_url)
        index = f"{live_server.url}/api/repo/{channel.name}/simple/"
        blocked = _file_urls(index + "urllib3/")[URLLIB3_NEW.filename]
        assert _pip_gets(index, "urllib3", tmp_path / "before") == "2.0.5"

        _load("pypi")
        _enforce_offline(upstream)

        reason = _reason(channel, URLLIB3_NEW.filename)
        assert reason == "GHSA-v845-jxx5-vc9f (CVE-2023-43804) score 5.9 ≥ 5.0"
        assert _reason(channel, URLLIB3_OLD.filename) == ""
        assert _pip_gets(index, "urllib3", tmp_path / "blocked") == "1.26.18"
        assert list(_file_urls(index + "urllib3/")) == [URLLIB3_OLD.filename]
        assert _get(blocked).status_code == 403

        _waive(policy, "urllib3 ==2.0.5", "GHSA-v845-jxx5-vc9f")
        _enforce_offline(upstream)

        assert _reason(channel, URLLIB3_NEW.filename) == ""
        assert _pip_gets(index, "urllib3", tmp_path / "waived") == "2.0.5"
        download = _get(blocked)
        assert download.status_code == 200
        assert download.content == (upstream.root / "files" / URLLIB3_NEW.filename).read_bytes()
        explained = _explained(channel, "urllib3", "2.0.5")
        assert explained["allowed"] and explained["policy"] == policy.name
        assert (
            "GHSA-v845-jxx5-vc9f (CVE-2023-43804) score 5.9 ≥ 5.0: waived by "
            in (explained["waived"])
        )
        assert "security-team" in explained["waived"]


# --- the malicious-package entry -------------------------------------------------------------


def test_a_malicious_package_entry_blocks_without_any_policy_and_names_itself(
    run_mirror, live_server, tmp_path
):
    dists = [FakeDist("aiohttp", "3.9.1"), FakeDist("aiohtt", "0.1")]  # and its typosquat
    plain = ChannelFactory(kind="pypi")  # no policy at all
    # A policy whose score rule lets everything in does not let a malicious package in.
    lenient = PolicyFactory(
        package_type="pypi", cve_score=Decimal("10.0"), cve_score_comparator="<="
    )
    guarded = ChannelFactory(kind="pypi", policy=lenient)
    with IndexServer(build_index(tmp_path / "index", dists)) as upstream:
        _synced(run_mirror, plain, upstream.index_url)
        _synced(run_mirror, guarded, upstream.index_url)
        index = f"{live_server.url}/api/repo/{plain.name}/simple/"
        assert pip_install(index, ["aiohtt"], tmp_path / "before").returncode == 0

        _load("pypi")
        _enforce_offline(upstream)

    for channel in (plain, guarded):
        assert _reason(channel, "aiohtt-0.1-py3-none-any.whl") == (
            "malicious package: MAL-2023-1578"
        )
        assert _reason(channel, "aiohttp-3.9.1-py3-none-any.whl") == ""
        explained = _explained(channel, "aiohtt")
        assert not explained["allowed"]
        assert (explained["rule"], explained["advisory"]) == ("malicious", "MAL-2023-1578")
        assert {"rule": "malicious", "outcome": "block", "detail": explained["reason"]} in (
            explained["rules"]
        )
        simple = f"{live_server.url}/api/repo/{channel.name}/simple/"
        assert _get(simple + "aiohtt/").status_code == 404
    assert _explained(plain, "aiohtt")["policy"] is None

    refused = pip_install(index, ["aiohtt"], tmp_path / "after")
    assert refused.returncode != 0
    assert "No matching distribution found for aiohtt" in refused.stderr
    kept = pip_install(index, ["aiohttp"], tmp_path / "kept")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert (tmp_path / "kept" / "aiohttp-3.9.1.dist-info").is_dir()


# --- R ----------------------------------------------------------------------------------------


def _r_gets(repos: str, lib: Path) -> str:
    """What `readxl_hello()` says after `install.packages("readxl")` from `repos` alone."""
    result = rscript_install(repos, ["readxl"], lib)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@needs_r
def test_r_loses_a_version_an_advisory_blocks_and_a_waiver_brings_it_back(
    run_mirror, live_server, tmp_path
):
    # RSEC advisories carry no score: this policy keeps out whatever has an open advisory.
    # RSEC-2023-2 affects readxl 1.4.1 only; RSEC-2023-0 (< 1.1.0) neither version here.
    policy = PolicyFactory(package_type="cran", cve_statuses_excluded=["reported", "active"])
    channel = ChannelFactory(kind="cran", policy=policy)
    packages = [RPackage("readxl", "1.4.0"), RPackage("readxl", "1.4.1")]
    with CranServer(build_repo(tmp_path / "cran", packages)) as upstream:
        _synced(run_mirror, channel, upstream.url)
        repos = f"{live_server.url}/api/repo/{channel.name}"
        blocked = f"{repos}/src/contrib/readxl_1.4.1.tar.gz"
        assert _r_gets(repos, tmp_path / "before") == "readxl 1.4.1"

        _load("cran")
        _enforce_offline(upstream)

        assert _reason(channel, "readxl_1.4.1.tar.gz") == (
            "RSEC-2023-2 (CVE-2021-27836) status reported is excluded"
        )
        assert _reason(channel, "readxl_1.4.0.tar.gz") == ""
        assert _r_gets(repos, tmp_path / "blocked") == "readxl 1.4.0"
        assert _get(blocked).status_code == 403

        _waive(policy, "readxl (== 1.4.1)", "CVE-2021-27836")  # by the advisory's alias
        _enforce_offline(upstream)

        assert _reason(channel, "readxl_1.4.1.tar.gz") == ""
        assert _r_gets(repos, tmp_path / "waived") == "readxl 1.4.1"
        download = _get(blocked)
        assert download.status_code == 200
        source = upstream.root / "src" / "contrib" / "readxl_1.4.1.tar.gz"
        assert download.content == source.read_bytes()
        assert "waived by security-team" in _explained(channel, "readxl", "1.4.1")["waived"]


# --- conda (py-rattler) ---------------------------------------------------------------------

CONDA_URLLIB3_OLD = FakePackage("urllib3", "1.26.18", build="pyhd8ed1ab_0")
CONDA_URLLIB3_NEW = FakePackage("urllib3", "2.0.5", build="pyhd8ed1ab_0")
# The Redis server, a native package: PyPI's "redis" is the client (conda's "redis-py").
CONDA_REDIS = FakePackage("redis", "4.0.14", build="h7f98852_0", subdir="linux-64", fmt=".conda")


def _solve(channel_url: str, specs: list[str], work: Path) -> dict[str, str]:
    """name -> version of what rattler solves for `specs` from `channel_url`, with a repodata
    cache of its own (so nothing is reused from an earlier solve); checks every file would
    come from the channel."""

    async def solve() -> list[rattler.RepoDataRecord]:
        return await rattler.solve(
            sources=[channel_url],
            specs=specs,
            platforms=["linux-64", "noarch"],
            gateway=rattler.Gateway(cache_dir=work / "repodata-cache"),
        )

    records = asyncio.run(solve())
    assert all(r.url.startswith(channel_url) for r in records), [r.url for r in records]
    return {r.name.normalized: str(r.version) for r in records}


def test_rattler_loses_a_mapped_conda_package_but_not_an_unmapped_namesake(
    run_mirror, live_server, tmp_path
):
    # conda-forge's mapping says conda "urllib3" is PyPI "urllib3" and conda "redis-py" is PyPI
    # "redis"; conda "redis" (the server) has no PyPI name, so PYSEC-2023-45 (PyPI redis
    # < 4.3.6) must not touch it, though its version lies in that range.
    NameMapping.objects.create(conda_name="urllib3", ecosystem="PyPI", name="urllib3")
    NameMapping.objects.create(conda_name="redis-py", ecosystem="PyPI", name="redis")
    policy = PolicyFactory(package_type="conda", cve_statuses_excluded=["reported", "active"])
    channel = ChannelFactory(kind="conda", policy=policy)
    packages = [CONDA_URLLIB3_OLD, CONDA_URLLIB3_NEW, CONDA_REDIS]
    with ChannelServer(build_channel(tmp_path / "upstream", packages)) as upstream:
        _synced(run_mirror, channel, upstream.url, subdirs=["linux-64"])
        url = f"{live_server.url}/api/repo/{channel.path}/"
        specs = ["urllib3", "redis"]
        assert _solve(url, specs, tmp_path / "before") == {"urllib3": "2.0.5", "redis": "4.0.14"}

        _load("pypi")
        _enforce_offline(upstream)

    reason = _reason(channel, CONDA_URLLIB3_NEW.filename)
    assert reason.startswith("GHSA-v845-jxx5-vc9f (CVE-2023-43804) status reported is excluded")
    assert reason.endswith("(PyPI urllib3, by the conda name mapping)")
    assert _reason(channel, CONDA_URLLIB3_OLD.filename) == ""
    assert _reason(channel, CONDA_REDIS.filename) == ""
    redis = _explained(channel, "redis")
    assert redis["allowed"]
    assert {"rule": "cve-status", "outcome": "pass", "detail": "no advisory affects it"} in (
        redis["rules"]
    )

    assert _solve(url, specs, tmp_path / "after") == {"urllib3": "1.26.18", "redis": "4.0.14"}
    noarch = _get(url + "noarch/repodata.json").json()
    assert sorted(noarch["packages"]) == [CONDA_URLLIB3_OLD.filename]
    assert _get(url + f"noarch/{CONDA_URLLIB3_NEW.filename}").status_code == 403
    assert _get(url + f"linux-64/{CONDA_REDIS.filename}").status_code == 200

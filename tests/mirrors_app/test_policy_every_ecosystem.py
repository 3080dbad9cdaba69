"""Policies on Python and R mirrors through a real sync from loopback upstreams: advisories of
the right ecosystem, dry runs, waivers that expire, and "test a package"."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from channels_app.models import Package
from mirrors_app.sync.policy import packages_decide, policy_fingerprint
from mirrors_app.sync.policy import test_package as ask_decider
from policies_app.models import Vulnerability, Waiver
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index

pytestmark = pytest.mark.django_db(transaction=True)


def _advisory(osv_id, ecosystem, name, fixed, score="8.1", aliases=()):
    return Vulnerability.objects.create(
        osv_id=osv_id,
        aliases=list(aliases),
        cvss_score=Decimal(score),
        affected=[
            {
                "ecosystem": ecosystem,
                "name": name,
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                ],
                "versions": [],
            }
        ],
        ecosystems=f"|{ecosystem}|",
        malicious=osv_id.startswith("MAL-"),
    )


def _excluded(mirror) -> dict[str, str]:
    rows = Package.objects.filter(mirror=mirror, removed=False)
    return dict(rows.values_list("filename", "excluded_reason"))


@pytest.fixture
def pypi_mirror(tmp_path, run_mirror):
    dists = [FakeDist("Flask", "2.3.1"), FakeDist("flask", "2.3.2"), FakeDist("idna", "3.7")]
    with IndexServer(build_index(tmp_path / "index", dists)) as server:
        policy = PolicyFactory(package_type="pypi", cve_score="7.0")
        channel = ChannelFactory(kind="pypi", policy=policy)
        mirror = MirrorFactory(channel=channel, source_url=server.url + "/simple/")
        _advisory("GHSA-m2qf-hxjv-5gpq", "PyPI", "flask", "2.3.2", aliases=["CVE-2023-30861"])
        _advisory("RSEC-2099-1", "CRAN", "idna", "99")  # another ecosystem's name twin
        run = run_mirror(mirror)
        yield mirror, run, server


def test_a_python_policy_blocks_by_pypi_advisories_during_a_sync(pypi_mirror):
    mirror, run, _ = pypi_mirror
    assert run.state == "completed", run.error
    excluded = _excluded(mirror)
    assert excluded["flask-2.3.1-py3-none-any.whl"] == (
        "GHSA-m2qf-hxjv-5gpq (CVE-2023-30861) score 8.1 ≥ 7.0"
    )
    assert excluded["flask-2.3.2-py3-none-any.whl"] == ""
    assert excluded["idna-3.7-py3-none-any.whl"] == ""  # a CRAN advisory never applies


def test_a_waiver_lets_the_file_in_until_it_expires_without_any_upstream_request(pypi_mirror):
    mirror, _, server = pypi_mirror
    policy = mirror.effective_policy()
    before = policy_fingerprint(mirror)
    waiver = Waiver.objects.create(
        policy=policy,
        spec="flask <2.3.2",
        rule="CVE-2023-30861",
        reason="not exposed: no cookies",
        expires_at=timezone.now() + dt.timedelta(hours=1),
        created_by_name="alice",
    )
    assert policy_fingerprint(mirror) != before  # enforcement sees the change
    seen = len(server.requests)
    change = packages_decide(mirror=mirror)
    assert change.entering == ["flask/flask-2.3.1-py3-none-any.whl"]
    assert _excluded(mirror)["flask-2.3.1-py3-none-any.whl"] == ""
    # Expired: the next decision blocks it again, with nobody acting on the waiver.
    Waiver.objects.filter(pk=waiver.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    change = packages_decide(mirror=mirror)
    assert [key for key, _ in change.leaving] == ["flask/flask-2.3.1-py3-none-any.whl"]
    assert len(server.requests) == seen  # decided from the database alone


def test_a_dry_run_policy_records_what_it_would_block_and_blocks_nothing(pypi_mirror):
    mirror, _, _ = pypi_mirror
    policy = mirror.effective_policy()
    policy.mode = "dry_run"
    policy.save()
    change = packages_decide(mirror=mirror)
    assert change.entering == ["flask/flask-2.3.1-py3-none-any.whl"]
    assert [key for key, _ in change.would_leave] == ["flask/flask-2.3.1-py3-none-any.whl"]
    row = Package.objects.get(mirror=mirror, filename="flask-2.3.1-py3-none-any.whl")
    assert row.excluded_reason == ""
    assert row.would_exclude_reason.startswith("GHSA-m2qf-hxjv-5gpq")


def test_test_a_package_judges_known_and_hypothetical_files(pypi_mirror):
    mirror, _, _ = pypi_mirror
    known = ask_decider(channel=mirror.channel, name="Flask", version="2.3.1")
    files = known["results"][0]["files"]
    assert [(f["path"], f["known"], f["allowed"]) for f in files] == [
        ("flask/flask-2.3.1-py3-none-any.whl", True, False)
    ]
    rules = {r["rule"]: r["outcome"] for r in files[0]["rules"]}
    assert rules["cve-score"] == "block" and rules["block"] == "not set"
    unknown = ask_decider(channel=mirror.channel, name="flask", version="2.2.0")
    (hypothetical,) = unknown["results"][0]["files"]
    assert not hypothetical["known"] and not hypothetical["allowed"]
    assert hypothetical["advisory"] == "GHSA-m2qf-hxjv-5gpq"
    fine = ask_decider(channel=mirror.channel, name="flask", version="3.0.0")
    assert fine["results"][0]["files"][0]["allowed"]


def test_an_r_policy_blocks_by_cran_advisories_and_a_malicious_entry_without_a_policy(
    tmp_path, run_mirror
):
    packages = [RPackage("readxl", "1.4.2"), RPackage("readxl", "1.4.3"), RPackage("evil", "1.0")]
    with CranServer(build_repo(tmp_path / "cran", packages)) as server:
        _advisory("RSEC-2023-5", "CRAN", "readxl", "1.4.3")
        _advisory("MAL-2024-9", "CRAN", "evil", "2.0")
        _advisory("GHSA-pypi-only", "PyPI", "evil", "9.0", score="10.0")
        mirror = MirrorFactory(channel=ChannelFactory(kind="cran"), source_url=server.url)
        run = run_mirror(mirror)
        assert run.state == "completed", run.error
        excluded = _excluded(mirror)
        # No policy: only the malicious-package rule applies.
        assert excluded == {
            "readxl_1.4.2.tar.gz": "",
            "readxl_1.4.3.tar.gz": "",
            "evil_1.0.tar.gz": "malicious package: MAL-2024-9",
        }
        policy = PolicyFactory(package_type="cran", cve_score="7.0")
        mirror.policy = policy
        mirror.save()
        run = run_mirror(mirror)
    excluded = _excluded(mirror)
    assert excluded["readxl_1.4.2.tar.gz"] == "RSEC-2023-5 score 8.1 ≥ 7.0"
    assert excluded["readxl_1.4.3.tar.gz"] == ""
    assert excluded["evil_1.0.tar.gz"] == "malicious package: MAL-2024-9"  # not the PyPI one


def test_a_policy_of_another_package_type_cannot_be_applied():
    from django.core.exceptions import ValidationError

    policy = PolicyFactory(package_type="conda")
    channel = ChannelFactory(kind="pypi", policy=policy)
    with pytest.raises(ValidationError, match="judges conda packages"):
        channel.full_clean()


def test_an_r_allow_list_brings_its_dependencies_and_has_a_dependency_report(tmp_path, run_mirror):
    from mirrors_app.reports import dependency_report

    packages = [
        RPackage("alpha", "1.0", imports=["beta (>= 2.0)"]),
        RPackage("beta", "1.0"),
        RPackage("beta", "2.0", depends=["gamma"]),
        RPackage("gamma", "0.1-1"),
        RPackage("other", "1.0"),
    ]
    with CranServer(build_repo(tmp_path / "cran", packages)) as server:
        policy = PolicyFactory(
            package_type="cran", allow_specs=["alpha"], include_dependencies=True
        )
        channel = ChannelFactory(kind="cran", policy=policy)
        mirror = MirrorFactory(channel=channel, source_url=server.url)
        run = run_mirror(mirror)
    assert run.state == "completed", run.error
    excluded = _excluded(mirror)
    assert excluded == {
        "alpha_1.0.tar.gz": "",
        "beta_1.0.tar.gz": "not in the allow list",  # alpha needs beta (>= 2.0)
        "beta_2.0.tar.gz": "",
        "gamma_0.1-1.tar.gz": "",
        "other_1.0.tar.gz": "not in the allow list",
    }
    rows = [
        (r["package"], r["version"], r["depth"], r["status"]) for r in dependency_report(mirror)
    ]
    assert rows == [
        ("alpha", "1.0", 0, "present"),
        ("beta", "2.0", 1, "present"),
        ("gamma", "0.1-1", 2, "present"),
    ]

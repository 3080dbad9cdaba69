"""Policies applied by conda syncs: what enters, reasons on the run, changes without refetch."""

from __future__ import annotations

import orjson
import pytest

from channels_app import publishing
from channels_app.models import Package
from mirrors_app import services
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

PACKAGES = [
    FakePackage("alpha", "1.0"),
    FakePackage("alpha", "2.0"),
    FakePackage("beta", "1.0", subdir="linux-64", fmt=".conda", depends=["alpha >=2"]),
    FakePackage("gamma", "1.0", subdir="linux-64"),
]


@pytest.fixture
def source(tmp_path):
    with ChannelServer(build_channel(tmp_path / "up", PACKAGES)) as server:
        yield server


def _listed(client, channel, subdir):
    response = client.get(f"/api/repo/{channel.path}/{subdir}/repodata.json")
    document = orjson.loads(response_body(response))
    return sorted([*document["packages"], *document["packages.conda"]])


def test_channel_policy_decides_what_is_published_with_reasons(source, run_mirror, client):
    policy = PolicyFactory(allow_specs=["beta"], include_dependencies=True)
    channel = ChannelFactory(policy=policy)
    mirror = MirrorFactory(channel=channel, source_url=source.url, mode=Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert _listed(client, channel, "linux-64") == ["beta-1.0-0.conda"]
    assert _listed(client, channel, "noarch") == ["alpha-2.0-0.tar.bz2"]
    assert run.filtered_reasons == {"not in the allow list": 2}
    assert run.downloaded == 2  # excluded packages are never downloaded
    # Excluded records are kept (with their reason) but not servable.
    gamma = Package.objects.get(name="gamma")
    assert gamma.excluded_reason == "not in the allow list" and gamma.artifact is None
    response = client.get(f"/api/repo/{channel.path}/linux-64/{gamma.filename}")
    assert response.status_code == 403  # and says why, for the user of conda to read
    assert response.content == b"Blocked by policy: not in the allow list\n"


def test_policy_change_is_previewed_and_applied_without_refetching(source, run_mirror, client):
    policy = PolicyFactory(block_specs=["gamma"])
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=source.url)
    run_mirror(mirror)
    assert "gamma-1.0-0.tar.bz2" not in _listed(client, mirror.channel, "linux-64")
    policy.block_specs = ["alpha <2"]
    policy.save()
    before = len(source.requests)
    preview = services.mirror_policy_apply(mirror=mirror, dry_run=True)
    assert preview["entering_packages"] == ["linux-64/gamma-1.0-0.tar.bz2"]
    assert preview["leaving_packages"] == [
        {"path": "noarch/alpha-1.0-0.tar.bz2", "reason": "blocked by package rule 'alpha <2'"}
    ]
    assert Package.objects.get(name="gamma").excluded_reason  # a preview changes nothing
    services.mirror_policy_apply(mirror=mirror)
    publishing.channel_publish(channel=mirror.channel)  # as the queued task does
    assert len(source.requests) == before  # upstream was not asked again
    assert "gamma-1.0-0.tar.bz2" in _listed(client, mirror.channel, "linux-64")
    assert _listed(client, mirror.channel, "noarch") == ["alpha-2.0-0.tar.bz2"]


def test_policy_edit_takes_effect_at_the_next_run_even_if_upstream_is_unchanged(
    source, run_mirror, client
):
    policy = PolicyFactory()
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=source.url)
    run_mirror(mirror)
    assert len(_listed(client, mirror.channel, "noarch")) == 2
    policy.block_specs = ["alpha"]
    policy.save()
    run = run_mirror(mirror)  # upstream answers 304 for every subdir
    assert run.filtered_reasons == {"blocked by package rule 'alpha'": 2}
    assert _listed(client, mirror.channel, "noarch") == []


def test_mirror_policy_replaces_the_channel_policy(source, run_mirror, client):
    channel = ChannelFactory(policy=PolicyFactory(block_specs=["beta"]))
    mirror = MirrorFactory(
        channel=channel, source_url=source.url, policy=PolicyFactory(block_specs=["gamma"])
    )
    run_mirror(mirror)
    assert _listed(client, channel, "linux-64") == ["beta-1.0-0.conda"]


def test_dependency_report_lists_requested_packages_and_their_dependencies(source, run_mirror):
    from mirrors_app import reports

    policy = PolicyFactory(
        allow_specs=["beta", "zeta"], include_dependencies=True, block_specs=["alpha 2.0"]
    )
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=source.url)
    run_mirror(mirror)
    rows = reports.dependency_report(mirror)
    assert [(r["requested"], r["package"], r["depth"], r["status"]) for r in rows] == [
        ("beta", "beta", 0, "present"),
        ("beta", "alpha", 1, "filtered: blocked by package rule 'alpha 2.0'"),
        ("zeta", "zeta", 0, "missing"),
    ]
    assert rows[1]["required_by"] == "beta" and rows[1]["version"] == "2.0"
    text = reports.as_csv(rows, reports.REPORT_COLUMNS)
    assert text.splitlines()[0] == "requested,package,version,build,subdir,depth,required_by,status"


def test_no_dependency_report_without_allow_rules_and_include_dependencies(source, run_mirror):
    from mirrors_app import reports

    mirror = MirrorFactory(
        channel=ChannelFactory(policy=PolicyFactory(allow_specs=["beta"])), source_url=source.url
    )
    assert reports.dependency_report(mirror) is None
    assert "Include dependencies" in reports.dependency_report_unavailable(mirror)


def test_why_is_a_package_missing(source, run_mirror):
    from mirrors_app import reports

    mirror = MirrorFactory(
        channel=ChannelFactory(policy=PolicyFactory(block_specs=["alpha <2"])),
        source_url=source.url,
    )
    run_mirror(mirror)
    answers = {a["path"]: (a["allowed"], a["reason"]) for a in reports.explain(mirror, "alpha")}
    assert answers == {
        "noarch/alpha-1.0-0.tar.bz2": (False, "blocked by package rule 'alpha <2'"),
        "noarch/alpha-2.0-0.tar.bz2": (True, f"allowed by {mirror.channel.policy.name}"),
    }
    excluded = reports.excluded_packages(mirror)
    assert excluded == [
        {
            "path": "noarch/alpha-1.0-0.tar.bz2",
            "name": "alpha",
            "version": "1.0",
            "reason": "blocked by package rule 'alpha <2'",
        }
    ]


def test_cve_data_loaded_from_osv_keeps_vulnerable_builds_out(tmp_path, run_mirror, client):
    from pathlib import Path

    from policies_app.services import vulnerabilities_load

    osv = Path(__file__).parents[1] / "fixtures" / "osv" / "conda"
    assert vulnerabilities_load(path=osv).created == 1
    packages = [
        FakePackage("openssl", "3.0.7", subdir="linux-64"),
        FakePackage("openssl", "3.0.8", subdir="linux-64"),
    ]
    with ChannelServer(build_channel(tmp_path / "up", packages)) as server:
        policy = PolicyFactory(cve_score="7.0", cve_score_comparator="<")
        mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=server.url)
        run = run_mirror(mirror)
    assert run.filtered_reasons == {"PSM-2023-0286 (CVE-2023-0286) score 7.4 ≥ 7.0": 1}
    assert _listed(client, mirror.channel, "linux-64") == ["openssl-3.0.8-0.tar.bz2"]


def test_dropping_the_policy_clears_blocks_and_dry_run_marks_at_the_next_run(
    source, run_mirror, client
):
    from policies_app.models import Policy

    blocking = PolicyFactory(block_specs=["gamma"])
    channel = ChannelFactory(policy=blocking)
    mirror = MirrorFactory(
        channel=channel,
        source_url=source.url,
        policy=PolicyFactory(block_specs=["beta"], mode=Policy.Mode.DRY_RUN),
    )
    run_mirror(mirror)
    marked = dict(
        Package.objects.exclude(excluded_reason="", would_exclude_reason="").values_list(
            "name", "would_exclude_reason"
        )
    )
    assert marked == {"beta": "blocked by package rule 'beta'"}  # the mirror's policy wins
    mirror.policy = None
    mirror.save()
    channel.policy = None
    channel.save()
    run = run_mirror(mirror)  # nothing judges: every mark goes, found by the partial index
    assert run.filtered == 0
    assert not Package.objects.exclude(excluded_reason="", would_exclude_reason="").exists()
    assert _listed(client, channel, "linux-64") == ["beta-1.0-0.conda", "gamma-1.0-0.tar.bz2"]

"""A first load whose policy decides each file alone: every row decided as it is read and
written once (no stage), on PostgreSQL and SQLite alike.

The rows and decisions must be those of the two-step path (every row written pending, then
decided by `packages_decide`); should a unit's files come out of the order the decisions rely
on, the run decides them again that way."""

from __future__ import annotations

import pytest

from benchmarks import policy_data
from channels_app.formats import conda_repodata
from channels_app.formats.conda_records import SECTIONS
from channels_app.models import PENDING_DECISION, Package
from mirrors_app.models import Mirror, SyncRun
from mirrors_app.sync import first_load
from mirrors_app.sync.policy import RowDecisions, packages_decide
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.mirrors_app.test_first_load import COMPARED, SUBDIRS, _store_rules

State = SyncRun.State


def _serve(upstream, files: int) -> None:
    """The benchmark's conda files over five subdirs; every 13th without a publication time
    (the cooldown then counts from the day PSM first stored it)."""
    sections = {subdir: {"packages": {}, "packages.conda": {}} for subdir in SUBDIRS}
    for i in range(files):
        subdir, filename, record = policy_data.conda_file(i)
        if i % 13 == 5:
            record.pop("timestamp")
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        sections[subdir][section][filename] = record
    upstream.write("channeldata.json", {"subdirs": SUBDIRS, "packages": {}})
    for subdir, document in sections.items():
        upstream.write(f"{subdir}/repodata.json", {"info": {"subdir": subdir}, **document})


def _rows(mirror) -> dict[tuple[str, str], tuple]:
    rows = Package.objects.filter(mirror=mirror).values_list(*COMPARED)
    return {(row[0], row[1]): row for row in rows}


def _two_step(mirror, policy) -> tuple[dict, dict]:
    """The mirror's rows decided the two-step way: all pending, then `packages_decide`; and
    what that newly kept out."""
    mirror.channel.policy = policy
    mirror.channel.save()
    mirror = Mirror.objects.get(pk=mirror.pk)  # the policy as stored, as a run reads it
    Package.objects.filter(mirror=mirror).update(excluded_reason=PENDING_DECISION)
    change = packages_decide(mirror=mirror, count_allowed=False)
    return _rows(mirror), dict(change.newly_excluded)


def _no_stage(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a policy deciding each file alone needs no stage")

    monkeypatch.setattr(first_load.FirstLoad, "begin", refuse)


def _plain_and_decided(upstream, run_mirror, files, advisories, waivers, mode):
    """`files` served; a mirror of them without a policy, run; the benchmark's conda rules
    (without the dependency closure, noarch among the platforms) stored; and a mirror of
    the same files under them, not run yet."""
    _serve(upstream, files)
    options = {"subdirs": SUBDIRS}
    plain = MirrorFactory(channel=ChannelFactory(), source_url=upstream.url, options=options)
    assert run_mirror(plain).state == State.COMPLETED
    case = policy_data.conda_case(files, advisories, waivers)
    case.policy.include_dependencies = False
    case.policy.platforms_include = [*case.policy.platforms_include, "noarch"]
    policy = _store_rules(case, mode)
    mirror = MirrorFactory(
        channel=ChannelFactory(policy=policy), source_url=upstream.url, options=options
    )
    return plain, policy, mirror


@pytest.mark.django_db(transaction=True)  # the writing thread on its own connection, as in a worker
@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
def test_a_first_load_decided_as_read_writes_the_rows_and_decisions_of_the_two_step_path(
    upstream, run_mirror, monkeypatch, mode
):
    files = 3000
    # Every rule kind a file is decided by alone, with advisories, the name mapping and
    # waivers.
    plain, policy, mirror = _plain_and_decided(upstream, run_mirror, files, 200, 100, mode)
    _no_stage(monkeypatch)
    run = run_mirror(mirror)
    assert run.state == State.COMPLETED, run.error
    got = _rows(mirror)
    assert len(got) == files

    expected, newly_excluded = _two_step(plain, policy)
    assert got == expected
    assert run.filtered_reasons == newly_excluded
    reasons = {row[-2] or row[-1] for row in got.values()}
    assert len(reasons) > 10
    assert any("legacy" in reason for reason in reasons)
    assert any(reason.startswith("first seen") for reason in reasons)  # no timestamp
    assert mirror.policy_fingerprint  # decided: the next run does not decide again
    again = run_mirror(mirror)
    assert again.state == State.COMPLETED and again.ingested == 0
    assert again.filtered_reasons == {}
    assert _rows(mirror) == got


@pytest.mark.django_db(transaction=True)
def test_files_read_out_of_order_are_decided_again_together(upstream, run_mirror, monkeypatch):
    plain, policy, mirror = _plain_and_decided(upstream, run_mirror, 600, 20, 0, "enforce")
    _no_stage(monkeypatch)
    # `.tar.bz2` files before their `.conda` twins: the legacy rule cannot be decided as read.
    monkeypatch.setattr(conda_repodata, "ORDER", SECTIONS)
    run = run_mirror(mirror)
    assert run.state == State.COMPLETED, run.error
    expected, _ = _two_step(plain, policy)
    assert _rows(mirror) == expected
    assert any("legacy" in row[-2] for row in expected.values())
    assert mirror.policy_fingerprint


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kind, options, rules, alone",
    [
        ("conda", {}, {"block_specs": ["gamma"], "min_age_days": 3}, True),
        ("conda", {}, {"allow_specs": ["gamma"], "include_dependencies": True}, False),
        ("conda", {}, {"platforms_include": ["linux-64"]}, False),
        ("conda", {}, {"platforms_include": ["linux-64", "noarch"]}, True),
        ("pypi", {}, {"block_specs": ["gamma"]}, True),
        ("pypi", {"package_types": ["wheel"]}, {"block_specs": ["gamma"]}, False),  # filters
        ("cran", {}, {"block_specs": ["gamma"]}, True),
        ("cran", {}, {"licenses_exclude": ["GPL"]}, False),
    ],
)
def test_a_first_load_decides_as_read_only_where_each_file_is_decided_alone(
    kind, options, rules, alone
):
    policy = PolicyFactory(package_type=kind, **rules)
    channel = ChannelFactory(kind=kind, policy=policy)
    mirror = MirrorFactory(channel=channel, options=options)
    assert (RowDecisions.for_mirror(mirror) is not None) is alone

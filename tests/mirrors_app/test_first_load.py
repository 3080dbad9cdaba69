"""A first load with something to decide: rows staged, decided, then written once each.

The rows and decisions must be those of the two-step path (every row written pending, then
decided by `packages_decide`), and the stage must go on every way out."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from benchmarks import policy_data
from channels_app.models import PENDING_DECISION, Package
from mirrors_app import services
from mirrors_app.models import Mirror, MirrorUnit, SyncRun
from mirrors_app.sync.first_load import PREFIX
from mirrors_app.sync.policy import packages_decide
from policies_app.models import NameMapping, Vulnerability, Waiver
from tests.conftest import conda_record
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, SyncRunFactory

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the stage is PostgreSQL's (COPY, UNLOGGED)"
)
State = SyncRun.State
SUBDIRS = ["linux-64", "noarch", "osx-arm64", "win-64", "win-32"]
#: Every column a sync writes but the ids and times.
COMPARED = (
    "unit",
    "filename",
    "name",
    "version",
    "sha256",
    "md5",
    "size",
    "upstream_url",
    "record",
    "entry_digest",
    "on_demand",
    "removed",
    "error",
    "artifact_id",
    "sidecar_id",
    "excluded_reason",
    "would_exclude_reason",
)


def _stages() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE starts_with(relname, %s) ORDER BY relname",
            [PREFIX],
        )
        return [name for (name,) in cursor.fetchall()]


def _rows(mirror) -> dict[tuple[str, str], tuple]:
    rows = Package.objects.filter(mirror=mirror).values_list(*COMPARED)
    return {(row[0], row[1]): row for row in rows}


def _serve_case(upstream, case_files: int) -> None:
    """The benchmark's conda files (five platforms, licenses, dates, dependencies, legacy
    twins) as a channel of five subdirs."""
    sections = {subdir: {"packages": {}, "packages.conda": {}} for subdir in SUBDIRS}
    for i in range(case_files):
        subdir, filename, record = policy_data.conda_file(i)
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        sections[subdir][section][filename] = record
    upstream.write("channeldata.json", {"subdirs": SUBDIRS, "packages": {}})
    for subdir, document in sections.items():
        upstream.write(f"{subdir}/repodata.json", {"info": {"subdir": subdir}, **document})


def _store_rules(case, mode: str):
    """The benchmark's policy with every rule kind, its advisories, name mapping and waivers,
    as rows."""
    policy = case.policy
    policy.name, policy.mode = f"every rule ({mode})", mode
    policy.save()
    for advisory in case.advisories:
        ecosystem = advisory.affected[0]["ecosystem"]
        Vulnerability.objects.create(
            osv_id=advisory.id,
            aliases=list(advisory.aliases),
            cvss_score=advisory.score,
            status=advisory.status,
            affected=advisory.affected,
            ecosystems=f"|{ecosystem}|",
            malicious=advisory.malicious,
        )
    NameMapping.objects.bulk_create(
        NameMapping(conda_name=conda, ecosystem=ecosystem, name=name)
        for conda, names in case.mapping.items()
        for ecosystem, name in names
    )
    expires = timezone.now() + dt.timedelta(days=30)
    for spec, rule in case.waivers:
        Waiver.objects.create(
            policy=policy, spec=spec, rule=rule, reason="test", expires_at=expires
        )
    return policy


@pytest.mark.django_db(transaction=True)  # the writing thread on its own connection, as in a worker
@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
def test_a_first_load_writes_the_rows_and_decisions_of_the_two_step_path(
    upstream, run_mirror, mode
):
    files = 3000
    _serve_case(upstream, files)
    options = {"subdirs": SUBDIRS}
    # The reference rows: a mirror with nothing to decide writes them straight (no stage).
    plain = MirrorFactory(channel=ChannelFactory(), source_url=upstream.url, options=options)
    assert run_mirror(plain).state == State.COMPLETED
    reference = _rows(plain)
    assert len(reference) == files

    case = policy_data.conda_case(files, 200, 100)
    policy = _store_rules(case, mode)
    staged = MirrorFactory(
        channel=ChannelFactory(policy=policy), source_url=upstream.url, options=options
    )
    run = run_mirror(staged)
    assert run.state == State.COMPLETED, run.error
    assert _stages() == []
    got = _rows(staged)

    # The two-step path on the reference rows: all pending, then decided.
    plain.channel.policy = policy
    plain.channel.save()
    plain = Mirror.objects.get(pk=plain.pk)  # the policy as stored, as a run reads it
    Package.objects.filter(mirror=plain).update(excluded_reason=PENDING_DECISION)
    change = packages_decide(mirror=plain, count_allowed=False)
    expected = _rows(plain)
    assert got == expected
    assert run.filtered_reasons == dict(change.newly_excluded)
    # The policy had work to do of every kind, and the decisions say which.
    reasons = {row[-2] or row[-1] for row in got.values()}
    assert len(reasons) > 10
    if mode == "enforce":
        assert sum(1 for row in got.values() if row[-2]) > files // 2
    else:
        assert all("MAL-" in row[-2] for row in got.values() if row[-2])  # malicious only
        assert sum(1 for row in got.values() if row[-1]) > files // 2
    assert staged.policy_fingerprint  # decided: the next run does not decide again
    again = run_mirror(staged)
    assert again.state == State.COMPLETED and again.ingested == 0
    assert _rows(staged) == got


def _upstream_with_two_units(upstream):
    upstream.write("channeldata.json", {"subdirs": ["linux-64", "noarch"], "packages": {}})
    upstream.write(
        "linux-64/repodata.json",
        {
            "packages.conda": {
                "beta-2.0-0.conda": conda_record("beta", "2.0", subdir="linux-64"),
                "gamma-1.0-0.conda": conda_record("gamma", "1.0", subdir="linux-64"),
            }
        },
    )
    upstream.write(
        "noarch/repodata.json",
        {"packages": {"alpha-1.0-0.tar.bz2": conda_record("alpha", "1.0")}},
    )
    return upstream


def _claimed(mirror) -> SyncRun:
    run = SyncRunFactory(mirror=mirror, state=State.QUEUED)
    return services.sync_run_claim(run_id=run.pk)


def _when_reading(unit: str, action, monkeypatch) -> None:
    """Do `action()` as the run starts reading `unit`'s index (linux-64 is read first)."""
    from mirrors_app.sync import progress as progress_module

    real_step = progress_module.Progress.step

    def step(self, text, **kwargs):
        real_step(self, text, **kwargs)
        if text.startswith(f"{unit}:"):
            action()
            self.flush()

    monkeypatch.setattr(progress_module.Progress, "step", step)


def _blocking_gamma(staged: bool):
    """A policy keeping out gamma: one deciding each file alone (its rows decided as they are
    read), or (`staged`) one whose allow list brings dependencies, which needs every file at
    once (its rows staged). Both decide the same."""
    if staged:
        return PolicyFactory(
            block_specs=["gamma"],
            allow_specs=["alpha", "beta", "gamma"],
            include_dependencies=True,
        )
    return PolicyFactory(block_specs=["gamma"])


GAMMA = "blocked by package rule 'gamma'"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("staged", [True, False], ids=["staged", "decided-as-read"])
def test_a_first_load_stopped_midway_keeps_what_it_read_and_drops_its_stage(
    upstream, run_mirror, monkeypatch, staged
):
    from mirrors_app.sync import run_sync

    _upstream_with_two_units(upstream)
    mirror = MirrorFactory(
        channel=ChannelFactory(policy=_blocking_gamma(staged)), source_url=upstream.url
    )
    run = _claimed(mirror)
    _when_reading("noarch", lambda: services.mirror_stop(mirror=mirror), monkeypatch)
    assert run_sync(run) == State.STOPPED
    assert _stages() == []
    # linux-64 was read to its end: kept, and so is the unit. Staged rows go in undecided
    # (as without a stage); rows decided as they were read keep their decisions.
    kept = dict(Package.objects.filter(mirror=mirror).values_list("filename", "excluded_reason"))
    if staged:
        assert kept == {"beta-2.0-0.conda": PENDING_DECISION, "gamma-1.0-0.conda": PENDING_DECISION}
    else:
        assert kept == {"beta-2.0-0.conda": "", "gamma-1.0-0.conda": GAMMA}
        run.refresh_from_db()
        assert run.filtered_reasons == {GAMMA: 1}
    assert list(MirrorUnit.objects.filter(mirror=mirror).values_list("name", flat=True)) == [
        "linux-64"
    ]
    assert not Mirror.objects.get(pk=mirror.pk).policy_fingerprint  # the next run decides
    monkeypatch.undo()
    again = run_mirror(mirror)  # not a first load: decides what the stopped run kept
    assert again.state == State.COMPLETED, again.error
    assert dict(
        Package.objects.filter(mirror=mirror).values_list("filename", "excluded_reason")
    ) == {
        "alpha-1.0-0.tar.bz2": "",
        "beta-2.0-0.conda": "",
        "gamma-1.0-0.conda": GAMMA,
    }
    # What this run newly kept out (the stopped run counted gamma if it decided it).
    assert again.filtered_reasons == ({GAMMA: 1} if staged else {})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("staged", [True, False], ids=["staged", "decided-as-read"])
def test_a_first_load_failing_midway_keeps_what_it_read_and_drops_its_stage(
    upstream, run_mirror, monkeypatch, staged
):
    from mirrors_app.sync import run_sync

    _upstream_with_two_units(upstream)
    mirror = MirrorFactory(
        channel=ChannelFactory(policy=_blocking_gamma(staged)), source_url=upstream.url
    )
    run = _claimed(mirror)

    def crash() -> None:
        raise RuntimeError("a bug")

    _when_reading("noarch", crash, monkeypatch)
    assert run_sync(run) == State.FAILED
    run.refresh_from_db()
    assert run.error == "Internal error: RuntimeError: a bug"
    assert _stages() == []
    kept = dict(Package.objects.filter(mirror=mirror).values_list("filename", "excluded_reason"))
    if staged:
        assert kept == {"beta-2.0-0.conda": PENDING_DECISION, "gamma-1.0-0.conda": PENDING_DECISION}
    else:
        assert kept == {"beta-2.0-0.conda": "", "gamma-1.0-0.conda": GAMMA}
    monkeypatch.undo()
    again = run_mirror(mirror)
    assert again.state == State.COMPLETED, again.error
    assert Package.objects.filter(mirror=mirror, excluded_reason="").count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("staged", [True, False], ids=["staged", "decided-as-read"])
def test_stages_no_run_uses_are_dropped_when_a_first_load_starts(upstream, run_mirror, staged):
    _upstream_with_two_units(upstream)
    mirror = MirrorFactory(
        channel=ChannelFactory(policy=_blocking_gamma(staged)), source_url=upstream.url
    )
    busy = MirrorFactory(channel=ChannelFactory(), source_url=upstream.url, name="busy")
    SyncRunFactory(mirror=busy, state=State.RUNNING)
    left = [
        f"{PREFIX}{mirror.pk}_killed",  # this mirror's, from a worker killed mid-run
        f"{PREFIX}{mirror.pk + 1000}_gone",  # a deleted mirror's
        f"{PREFIX}{busy.pk}_running",  # another mirror's run, still going: kept
    ]
    with connection.cursor() as cursor:
        for name in left:
            cursor.execute(f"CREATE UNLOGGED TABLE {name} (n bigint)")
    run = run_mirror(mirror)
    assert run.state == State.COMPLETED, run.error
    assert _stages() == [f"{PREFIX}{busy.pk}_running"]
    assert Package.objects.filter(mirror=mirror).count() == 3
    assert Mirror.objects.get(pk=mirror.pk).policy_fingerprint


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("staged", [True, False], ids=["staged", "decided-as-read"])
def test_a_file_another_mirror_took_meanwhile_stays_that_mirrors(
    upstream, run_mirror, monkeypatch, staged
):
    _upstream_with_two_units(upstream)
    channel = ChannelFactory(policy=_blocking_gamma(staged))
    mirror = MirrorFactory(channel=channel, source_url=upstream.url)
    other = MirrorFactory(channel=channel, source_url=upstream.url, name="other")

    def take() -> None:  # linux-64 is read by then
        Package.objects.create(
            channel=channel,
            mirror=other,
            unit="linux-64",
            filename="beta-2.0-0.conda",
            name="beta",
            version="2.0",
            record="{}",
        )

    _when_reading("noarch", take, monkeypatch)
    run = run_mirror(mirror)
    assert run.state == State.COMPLETED, run.error
    assert _stages() == []
    rows = Package.objects.filter(channel=channel).values_list(
        "mirror__name", "filename", "excluded_reason"
    )
    assert sorted(rows) == [
        (mirror.name, "alpha-1.0-0.tar.bz2", ""),
        (mirror.name, "gamma-1.0-0.conda", "blocked by package rule 'gamma'"),
        ("other", "beta-2.0-0.conda", ""),
    ]

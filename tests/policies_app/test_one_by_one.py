"""Deciding files one at a time as they are read (`OneByOne`, a first load's path): the same
decisions as deciding them all together, for every rule kind a file can be decided by alone.
Policies with a rule that reads other files (`decides_alone` False) are decided together."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from benchmarks import policy_data
from policies_app.ecosystems import Candidate, ecosystem_for
from policies_app.engine import CompiledPolicy, OneByOne, WaiverRule
from policies_app.models import Policy


def _alone(case: policy_data.Case, mode: str) -> CompiledPolicy:
    """The case's policy (every rule kind, advisories, name mapping, waivers) without the
    rules that read other files: no dependency closure, noarch among the platforms."""
    policy = case.policy
    policy.mode = mode
    policy.include_dependencies = False
    if policy.platforms_include:
        policy.platforms_include = [*policy.platforms_include, "noarch"]
    return case.decider().policy


def _as_read(candidates: list[Candidate]) -> list[Candidate]:
    """Unit by unit, each unit's `.conda` files first (as conda's reader yields them)."""
    return sorted(candidates, key=lambda c: (c.unit, not c.filename.endswith(".conda")))


def _one_by_one(policy: CompiledPolicy, candidates: list[Candidate], *, by_file=True) -> dict:
    """Each file decided as read: by its unit, filename, version and record (`decide_file`, a
    first load's way: most files judged without a candidate), or (`by_file` False) by its
    candidate."""
    one = OneByOne(policy)
    decisions, unit = {}, None
    for c in candidates:
        if c.unit != unit:
            one.unit_read()
            unit = c.unit
        if by_file:
            decision = one.decide_file(c.unit, c.filename, c.version, c.record, c.first_seen)
        else:
            decision = one.decide(c)
        decisions[c.key] = decision
    assert one.in_order
    return decisions


BY_FILE = pytest.mark.parametrize("by_file", [True, False], ids=["by-file", "by-candidate"])


@BY_FILE
@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
def test_conda_files_decided_one_by_one_as_all_together(mode, by_file):
    case = policy_data.conda_case(4000, 200, 100)
    policy = _alone(case, mode)
    assert policy.decides_alone and not policy.legacy and policy.waivers and policy.allow
    candidates = _as_read(case.make_candidates())
    expected = policy.decide_all(candidates)
    got = _one_by_one(policy, candidates, by_file=by_file)
    assert got == expected
    # Every kind of decision was made, the legacy rule's included.
    reasons = {d.reason or d.would_block for d in got.values()}
    assert len(reasons) > 10
    assert any("legacy" in r for r in reasons)
    assert any(d.waived for d in got.values())
    assert any(d.reason.startswith("kept by exclusion") for d in got.values())


@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
@pytest.mark.parametrize("advisories, waivers, allow", [(10, 4, True), (0, 0, False)])
def test_conda_files_no_rule_names_decided_from_their_records_as_all_together(
    mode, advisories, waivers, allow
):
    # Few names with rules of their own: most files are judged from their record alone.
    case = policy_data.conda_case(4000, advisories, waivers)
    if not allow:  # else no legacy .tar.bz2 of such a file: its .conda is not listed
        case.policy.allow_specs = []
    policy = _alone(case, mode)
    candidates = _as_read(case.make_candidates())
    unnamed = {c.key for c in candidates if c.name not in policy.named}
    assert len(unnamed) > len(candidates) * 3 // 4, len(unnamed)
    expected = policy.decide_all(candidates)
    got = _one_by_one(policy, candidates)
    assert got == expected
    reasons = {d.reason or d.would_block for key, d in got.items() if key in unnamed}
    last = "not in the allow list" if allow else "legacy"
    for rule in ("platform", "license", "published", "cooldown", last):
        assert any(rule in r for r in reasons), rule


@BY_FILE
@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
def test_python_files_decided_one_by_one_as_all_together(mode, by_file):
    case = policy_data.python_case(300, 8, 60, 30)
    policy = _alone(case, mode)
    assert policy.decides_alone
    candidates = _as_read(case.make_candidates())
    assert _one_by_one(policy, candidates, by_file=by_file) == policy.decide_all(candidates)


@BY_FILE
def test_r_files_decided_one_by_one_as_all_together_without_license_rules(by_file):
    case = policy_data.r_case(300, 60, 30)
    case.policy.licenses_include = case.policy.licenses_exclude = []
    policy = _alone(case, "enforce")
    assert policy.decides_alone
    candidates = _as_read(case.make_candidates())
    assert _one_by_one(policy, candidates, by_file=by_file) == policy.decide_all(candidates)


@pytest.mark.parametrize(
    "rules, alone",
    [
        ({}, True),
        ({"allow_specs": ["numpy"]}, True),
        ({"allow_specs": ["numpy"], "include_dependencies": True}, False),
        ({"include_dependencies": True}, True),  # without an allow list it brings nothing
        ({"platforms_include": ["linux-64"]}, False),  # noarch dependencies are admitted
        ({"platforms_include": ["linux-64", "noarch"]}, True),
        ({"platforms_exclude": ["win-64"]}, True),
        ({"licenses_exclude": ["GPL"], "legacy_packages": False, "min_age_days": 3}, True),
    ],
)
def test_a_conda_policy_decides_files_alone_unless_a_rule_reads_other_files(rules, alone):
    compiled = CompiledPolicy(Policy(name="p", **rules), (), today=policy_data.TODAY)
    assert compiled.decides_alone is alone


def test_r_license_rules_read_other_files():
    # An Archive version's license is the current version's.
    rules = {"package_type": "cran", "licenses_exclude": ["GPL"]}
    assert not CompiledPolicy(Policy(name="p", **rules), (), today=policy_data.TODAY).decides_alone
    rules = {"package_type": "cran", "block_specs": ["dplyr"]}
    assert CompiledPolicy(Policy(name="p", **rules), (), today=policy_data.TODAY).decides_alone


def test_a_policy_deciding_files_together_is_refused():
    compiled = CompiledPolicy(
        Policy(name="p", allow_specs=["a"], include_dependencies=True), (), today=policy_data.TODAY
    )
    with pytest.raises(ValueError):
        OneByOne(compiled)


def test_a_conda_file_after_a_tar_bz2_of_its_unit_is_noticed():
    case = policy_data.conda_case(400, 20, 0)
    policy = _alone(case, "enforce")
    candidates = sorted(case.make_candidates(), key=lambda c: (c.unit, c.filename[-6:] == ".conda"))
    one = OneByOne(policy)
    for candidate in candidates:
        one.decide(candidate)
    assert not one.in_order
    # Unit by unit, each in its reader's order, it holds again.
    assert _one_by_one(policy, _as_read(candidates)) == policy.decide_all(candidates)


# --- Files judged from their record alone, odd records --------------------------------------

_MS_A_DAY = 86_400_000


def _ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * _MS_A_DAY


def _stamps() -> list:
    """Publication times on and around the bounds of the date rules below (in milliseconds,
    seconds, floats), and ones a build day cannot be read from."""
    stamps: list = [None, 0, -5, True, "1700000000000", 1_600_000_000, 1_600_000_000.5]
    stamps += [10**11 - 1, 10**11, 10**11 + 1, 1e11, 253_402_300_799_999]  # s or ms; year 9999
    for bound in (dt.date(2019, 12, 31), dt.date(2020, 1, 1), dt.date(2026, 11, 20)):
        for day in (bound, bound + dt.timedelta(days=1)):
            ms = _ms(day)
            stamps += [ms, ms - 1, ms + _MS_A_DAY - 1, ms // 1000, ms + 0.5, (ms - 1) / 1000]
    return stamps


LICENSES = [
    ("GPL-3.0", None),
    ("gpl-3.0-or-later", None),
    ("  GPL v3 ", ""),
    ("GPLv3", "GPL3"),
    ("MIT AND GPL-3.0-only", "MIT"),
    ("MIT", "MIT"),
    ("mit license", None),
    ("BSD-3-Clause", "bsd"),
    ("custom", "gpl3"),
    (None, None),
    ("", "GPL3"),
    ("unknown", None),
    ("NOASSERTION", "OTHER"),
]
#: (unit, the record's subdir): a unit is the file's platform, its subdir only without one.
PLATFORMS = [
    ("linux-64", "linux-64"),
    ("win-32", "win-32"),
    ("osx-64", "osx-64"),
    ("noarch", "noarch"),
    ("linux-64", "win-32"),
    ("", "win-32"),
    ("", "linux-64"),
    ("", None),
]
#: Names a rule names (as spelt by the record, any case) and names none names.
NAMES = ["pkg-a", "PKG-A", "pkg-b", "Blocked", "kept", "free", "Free-2", "", None]


def _odd_files() -> list[Candidate]:
    """Files of every combination of the values above (the same build as `.conda` and as
    `.tar.bz2` for some), read as conda's reader yields them."""
    eco = ecosystem_for("conda")
    stamps = _stamps()
    files = []
    for i, (name, (license, family)) in enumerate(itertools.product(NAMES, LICENSES)):
        for j, (unit, subdir) in enumerate(PLATFORMS):
            stamp = stamps[(i * 7 + j) % len(stamps)]
            record = {"name": name, "version": f"1.{j}", "build": f"h{i}_{j % 3}"}
            for key, value in (
                ("license", license),
                ("license_family", family),
                ("subdir", subdir),
                ("timestamp", stamp),
            ):
                if value is not None:
                    record[key] = value
            first_seen = dt.date(2026, 11, 10 + (i + j) % 20)
            stem = f"{name or 'x'}-1.{j}-h{i}"
            suffixes = (".conda", ".tar.bz2") if (i + j) % 3 else (".tar.bz2",)
            for suffix in suffixes:
                files.append(
                    eco.candidate(unit, stem + suffix, f"1.{j}", record, first_seen=first_seen)
                )
    return _as_read(files)


ODD_POLICIES = {
    "license-exclude": {
        "platforms_include": ["linux-64", "osx-64", "noarch"],
        "platforms_exclude": ["win-32"],
        "licenses_exclude": ["GPL3", "gpl"],
        "unknown_license": "block",
        "created_after": dt.date(2020, 1, 1),
        "created_before": dt.date(2026, 11, 20),
        "min_age_days": 10,
        "block_specs": ["conda-forge::blocked", "pkg-a >=1.3"],
        "exclusions": ["kept"],
    },
    "license-include": {
        "platforms_exclude": ["win-32", "osx-64"],
        "licenses_include": ["mit", "BSD"],
        "unknown_license": "allow",
        "min_age_days": 5,
        "allow_specs": ["pkg-a", "free", "kept[build=*_1]"],
    },
    "dates-only": {"created_before": dt.date(2020, 1, 1)},
    "cooldown-only": {"min_age_days": 20},
    "nothing": {},
}


@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
@pytest.mark.parametrize("rules", list(ODD_POLICIES), ids=list(ODD_POLICIES))
def test_odd_conda_records_decided_from_the_record_as_all_together(rules, mode):
    eco = ecosystem_for("conda")
    waivers = [
        WaiverRule(eco.parse_spec("pkg-b"), "license", "a", dt.datetime(2030, 1, 1), "ok"),
        WaiverRule(eco.parse_spec("free-2"), "legacy", "a", dt.datetime(2030, 1, 1), "ok"),
    ]
    policy = Policy(name="p", package_type="conda", mode=mode, **ODD_POLICIES[rules])
    compiled = CompiledPolicy(policy, (), today=policy_data.TODAY, waivers=waivers)
    assert compiled.decides_alone and not compiled.legacy
    files = _odd_files()
    named = [c.name in compiled.named for c in files]
    assert any(named) and not all(named)
    assert _one_by_one(compiled, files) == compiled.decide_all(files)


def test_a_package_rule_always_names_its_package():
    # Files are judged from their record alone when no rule names their package: a rule must
    # name one, no pattern standing for many.
    eco = ecosystem_for("conda")
    for text in ("pkg-*", "*", "*[license=MIT]"):
        with pytest.raises(ValueError):
            eco.parse_spec(text)
    assert eco.parse_spec("conda-forge/linux-64::PKG-A >=1").name == "pkg-a"


#: Python files: (project as the index spells it, upload time).
PYTHON_FILES = [
    (project, upload)
    for project in ("Blocked_Proj", "blocked.proj", "free-proj", "Free_Proj", "waived")
    for upload in (
        None,
        "",
        "not a time",
        "2019-12-31T23:59:59.999999Z",
        "2020-01-01T00:00:00Z",
        "2026-11-19T12:00:00Z",
        "2026-11-20T00:00:00+00:00",
        "2026-11-30",
    )
]
#: R files: (unit, Package, Date/Publication).
R_FILES = [
    (unit, name, published)
    for unit in ("src/contrib", "src/contrib/Archive/x")
    for name in ("blocked", "Blocked", "free", "waived", None)
    for published in (None, "garbage", "2019-12-31 23:59:59 UTC", "2020-01-01", "2026-11-25")
]


def _python_files() -> list[Candidate]:
    eco = ecosystem_for("pypi")
    files = []
    for i, (project, upload) in enumerate(PYTHON_FILES):
        entry = {"filename": f"{project}-1.{i}.tar.gz"}
        if upload is not None:
            entry["upload-time"] = upload
        seen = dt.date(2026, 11, 10 + i % 20)
        files.append(eco.candidate(project, entry["filename"], f"1.{i}", entry, first_seen=seen))
    return _as_read(files)


def _r_files() -> list[Candidate]:
    eco = ecosystem_for("cran")
    files = []
    for i, (unit, name, published) in enumerate(R_FILES):
        record = {"Version": f"1.{i}"}
        if name is not None:
            record["Package"] = name
        if published is not None:
            record["Date/Publication"] = published
        seen = dt.date(2026, 11, 10 + i % 20)
        filename = f"{name}_1.{i}.tar.gz"
        files.append(eco.candidate(unit, filename, f"1.{i}", record, first_seen=seen))
    return _as_read(files)


@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
@pytest.mark.parametrize(
    "kind, rules",
    [
        ("pypi", {"block_specs": ["blocked-proj <2"], "created_after": dt.date(2020, 1, 1)}),
        ("pypi", {"allow_specs": ["free-proj"], "min_age_days": 10}),
        ("pypi", {"created_before": dt.date(2026, 11, 20), "min_age_days": 3}),
        ("cran", {"block_specs": ["blocked"], "created_after": dt.date(2020, 1, 1)}),
        ("cran", {"allow_specs": ["free (>= 1.3)"], "min_age_days": 10}),
    ],
)
def test_odd_python_and_r_records_decided_from_the_record_as_all_together(kind, rules, mode):
    eco = ecosystem_for(kind)
    waiver = WaiverRule(eco.parse_spec("waived"), "cooldown", "a", dt.datetime(2030, 1, 1), "ok")
    policy = Policy(name="p", package_type=kind, mode=mode, **rules)
    compiled = CompiledPolicy(policy, (), today=policy_data.TODAY, waivers=[waiver])
    files = _python_files() if kind == "pypi" else _r_files()
    named = [c.name in compiled.named for c in files]
    assert any(named) and not all(named)
    assert _one_by_one(compiled, files) == compiled.decide_all(files)

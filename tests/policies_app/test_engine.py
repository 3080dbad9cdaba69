"""The policy engine: each rule kind alone and combined, on real-shaped conda records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from policies_app.ecosystems import ecosystem_for
from policies_app.engine import Advisory, CompiledPolicy, Decision
from policies_app.licenses import classify, normalize_license
from policies_app.models import Policy

TODAY = dt.date(2026, 11, 25)
MS_PER_DAY = 86_400_000


def _ts(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def rec(name, version, build="0", subdir="noarch", depends=(), license="MIT", ext=".conda", **kw):
    record = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "subdir": subdir,
        "depends": list(depends),
        "license": license,
        "timestamp": _ts(dt.date(2024, 1, 1)),
        **kw,
    }
    filename = f"{name}-{version}-{build}{ext}"
    return ecosystem_for("conda").candidate(subdir, filename, version, record)


def compile_(advisories=(), **rules) -> CompiledPolicy:
    return CompiledPolicy(Policy(name="p", **rules), advisories, today=TODAY)


def decide(policy, entries):
    decisions = policy.decide_all(entries)
    return {key.split("/", 1)[1]: d for key, d in decisions.items()}


UNIVERSE = [
    rec("python", "3.12.1", subdir="linux-64", license="PSF-2.0"),
    rec("numpy", "1.26.4", "py312h1", "linux-64", ["python >=3.12,<3.13", "libblas >=3.9"]),
    rec("numpy", "2.1.0", "py312h2", "linux-64", ["python >=3.12,<3.13", "libblas >=3.9"]),
    rec("libblas", "3.9.0", "openblas", "linux-64", ["libopenblas"], license="BSD-3-Clause"),
    rec("libopenblas", "0.3.27", "h1", "linux-64", ["libblas"], license="BSD-3-Clause"),  # cycle
    rec("requests", "2.32.0", depends=["urllib3 >=1.21", "python >=3.8"], license="Apache-2.0"),
    rec("urllib3", "2.2.1", depends=["python >=3.8"]),
    rec("gplthing", "1.0", license="GPL-3.0-or-later"),
    rec("mystery", "1.0", license=""),
    rec("winonly", "1.0", subdir="win-64"),
]


def test_no_rules_allows_everything():
    decisions = decide(compile_(), UNIVERSE)
    assert all(d.allowed for d in decisions.values())


@pytest.mark.parametrize(
    ("rules", "dropped", "reason"),
    [
        ({"platforms_include": ["linux-64", "noarch"]}, "winonly-1.0-0.conda", "platform win-64"),
        ({"platforms_exclude": ["win-64"]}, "winonly-1.0-0.conda", "win-64 is excluded"),
        ({"licenses_exclude": ["GPL"]}, "gplthing-1.0-0.conda", "is excluded (GPL)"),
        ({"licenses_include": ["MIT", "BSD", "PSF", "APACHE"]}, "gplthing-1.0-0.conda", "not"),
        (
            {"licenses_include": ["MIT"], "unknown_license": "block"},
            "mystery-1.0-0.conda",
            "license unknown",
        ),
        ({"block_specs": ["numpy >=2"]}, "numpy-2.1.0-py312h2.conda", "'numpy >=2'"),
    ],
)
def test_each_rule_alone_drops_with_a_reason(rules, dropped, reason):
    decisions = decide(compile_(**rules), UNIVERSE)
    assert not decisions[dropped].allowed
    assert reason in decisions[dropped].reason
    assert sum(not d.allowed for d in decisions.values()) >= 1


def test_unknown_license_is_kept_by_default():
    decisions = decide(compile_(licenses_include=["MIT"]), UNIVERSE)
    assert decisions["mystery-1.0-0.conda"].allowed
    assert not decisions["gplthing-1.0-0.conda"].allowed


def test_allow_list_keeps_only_matching_packages():
    decisions = decide(compile_(allow_specs=["numpy <2"]), UNIVERSE)
    allowed = {f for f, d in decisions.items() if d.allowed}
    assert allowed == {"numpy-1.26.4-py312h1.conda"}
    assert decisions["python-3.12.1-0.conda"].reason == "not in the allow list"


def test_include_dependencies_adds_the_closure_through_cycles_and_noarch():
    decisions = decide(compile_(allow_specs=["numpy <2"], include_dependencies=True), UNIVERSE)
    allowed = {f for f, d in decisions.items() if d.allowed}
    assert allowed == {
        "numpy-1.26.4-py312h1.conda",
        "python-3.12.1-0.conda",
        "libblas-3.9.0-openblas.conda",
        "libopenblas-0.3.27-h1.conda",
    }
    assert decisions["libopenblas-0.3.27-h1.conda"].reason == "dependency of libblas"


def test_dependencies_still_pass_the_other_rules():
    policy = compile_(allow_specs=["requests"], include_dependencies=True, licenses_exclude=["PSF"])
    universe = [*UNIVERSE, rec("python", "3.12.1", license="PSF-2.0")]
    decisions = decide(policy, universe)
    assert decisions["requests-2.32.0-0.conda"].allowed
    assert decisions["urllib3-2.2.1-0.conda"].allowed
    assert not decisions["python-3.12.1-0.conda"].allowed  # a dependency, but PSF is excluded


def test_exclusions_win_over_every_other_rule():
    policy = compile_(licenses_exclude=["GPL"], allow_specs=["numpy"], exclusions=["gplthing 1.*"])
    decisions = decide(policy, UNIVERSE)
    assert decisions["gplthing-1.0-0.conda"].allowed
    assert "exclusion" in decisions["gplthing-1.0-0.conda"].reason


def test_match_spec_edge_cases_build_and_brackets():
    entries = [
        rec("torch", "2.3.0", "cuda120_py312h1", "linux-64"),
        rec("torch", "2.3.0", "cpu_py312h1", "linux-64"),
        rec("torch", "2.3.1", "cpu_py312h2", "linux-64"),
    ]
    decisions = decide(compile_(allow_specs=["torch[build=*cuda*]"]), entries)
    assert [f for f, d in decisions.items() if d.allowed] == ["torch-2.3.0-cuda120_py312h1.conda"]
    decisions = decide(compile_(block_specs=["torch 2.3.0 cpu*"]), entries)
    assert [f for f, d in decisions.items() if not d.allowed] == ["torch-2.3.0-cpu_py312h1.conda"]
    decisions = decide(compile_(allow_specs=["torch[version='>=2.3.1']"]), entries)
    assert [f for f, d in decisions.items() if d.allowed] == ["torch-2.3.1-cpu_py312h2.conda"]


def test_creation_dates_and_cooldown():
    fresh = rec("fresh", "1.0", timestamp=_ts(TODAY - dt.timedelta(days=2)))
    old = rec("old", "1.0", timestamp=_ts(dt.date(2019, 5, 1)))
    undated = rec("undated", "1.0", timestamp=None)
    decisions = decide(compile_(min_age_days=7), [fresh, old, undated])
    assert "7-day cooldown" in decisions[fresh.filename].reason
    assert decisions[old.filename].allowed and decisions[undated.filename].allowed
    decisions = decide(compile_(created_after=dt.date(2020, 1, 1)), [fresh, old])
    assert decisions[old.filename].reason == "published 2019-05-01, before 2020-01-01"
    decisions = decide(compile_(created_before=dt.date(2020, 1, 1)), [fresh, old])
    assert not decisions[fresh.filename].allowed and decisions[old.filename].allowed


def test_legacy_tar_bz2_dropped_when_the_conda_build_is_mirrored():
    entries = [
        rec("a", "1.0", ext=".conda"),
        rec("a", "1.0", ext=".tar.bz2"),
        rec("b", "1.0", ext=".tar.bz2"),
    ]
    decisions = decide(compile_(), entries)
    assert not decisions["a-1.0-0.tar.bz2"].allowed
    assert "legacy" in decisions["a-1.0-0.tar.bz2"].reason
    assert decisions["b-1.0-0.tar.bz2"].allowed
    assert all(d.allowed for d in decide(compile_(legacy_packages=True), entries).values())


def _advisory(id_, score, status="reported", introduced="0", fixed="1.1"):
    events = [{"introduced": introduced}, {"fixed": fixed}]
    affected = [
        {
            "ecosystem": "conda",
            "name": "openssl",
            "ranges": [{"type": "ECOSYSTEM", "events": events}],
        }
    ]
    return Advisory(id_, Decimal(score) if score is not None else None, status, affected)


def test_cve_score_rule_names_the_worst_cve():
    entries = [rec("openssl", "1.0"), rec("openssl", "1.1")]
    advisories = [_advisory("CVE-2024-0001", "9.8"), _advisory("CVE-2024-0002", "5.0")]
    policy = compile_(advisories, cve_score=Decimal("7"), cve_score_comparator="<")
    decisions = decide(policy, entries)
    assert decisions["openssl-1.0-0.conda"].reason == "CVE-2024-0001 score 9.8 ≥ 7"
    assert decisions["openssl-1.1-0.conda"].allowed  # fixed in 1.1: no CVE, passes


def test_cve_status_rule():
    entries = [rec("openssl", "1.0")]
    advisories = [_advisory("CVE-2024-0003", None, status="active")]
    decisions = decide(compile_(advisories, cve_statuses_excluded=["active"]), entries)
    assert decisions["openssl-1.0-0.conda"].reason == "CVE-2024-0003 status active is excluded"
    decisions = decide(compile_(advisories, cve_statuses_excluded=["cleared"]), entries)
    assert decisions["openssl-1.0-0.conda"].allowed


def test_combined_rules_are_anded():
    policy = compile_(
        platforms_include=["linux-64", "noarch"],
        licenses_exclude=["GPL"],
        allow_specs=["numpy", "requests", "gplthing", "winonly"],
    )
    decisions = decide(policy, UNIVERSE)
    allowed = {f for f, d in decisions.items() if d.allowed}
    assert allowed == {
        "numpy-1.26.4-py312h1.conda",
        "numpy-2.1.0-py312h2.conda",
        "requests-2.32.0-0.conda",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MIT", {"MIT"}),
        ("BSD 3-Clause", {"BSD-3-CLAUSE", "BSD"}),
        ("GPL-3.0-or-later", {"GPL-3.0-OR-LATER", "GPL", "GPL3"}),
        ("GPLv2", {"GPL-2", "GPL", "GPL2"}),
        ("Apache 2.0", {"APACHE-2.0", "APACHE"}),
        ("MIT AND BSD-3-Clause", {"MIT", "BSD-3-CLAUSE", "BSD"}),
        ("LGPL-2.1", {"LGPL-2.1", "LGPL"}),
        ("Public Domain", {"PUBLIC-DOMAIN", "Public-Domain", "CC"}),
        ("MIT License", {"MIT"}),
        ("unknown", set()),
        ("", set()),
        ("Weird-Custom", {"WEIRD-CUSTOM", "OTHER"}),
    ],
)
def test_free_text_licenses_are_classified(text, expected):
    assert classify(text) == expected


def test_license_rule_values_are_families_or_identifiers():
    assert normalize_license("gpl3") == "GPL3"
    assert normalize_license("public-domain") == "Public-Domain"
    assert normalize_license("BSD-3-Clause") == "BSD-3-CLAUSE"
    assert normalize_license("not a license!") is None


def test_platform_rule_still_brings_the_noarch_dependencies_of_allowed_packages():
    policy = compile_(platforms_include=["linux-64"])
    decisions = decide(policy, UNIVERSE)
    assert decisions["urllib3-2.2.1-0.conda"].reason == "platform noarch is not included"
    assert not decisions["requests-2.32.0-0.conda"].allowed
    universe = [*UNIVERSE, rec("tool", "1.0", subdir="linux-64", depends=["urllib3"])]
    decisions = decide(policy, universe)
    assert decisions["urllib3-2.2.1-0.conda"] == Decision(True, "noarch dependency of tool")
    assert not decisions["requests-2.32.0-0.conda"].allowed

"""One decision model for conda, Python and R: each rule per ecosystem, advisories matched only
within their ecosystem (conda reaches PyPI ones through the name mapping), malicious-package
entries, waivers, dry runs and explanations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from policies_app.ecosystems import ecosystem_for
from policies_app.engine import Advisory, AdvisoryIndex, CompiledPolicy, Decider, WaiverRule
from policies_app.models import Policy

TODAY = dt.date(2026, 12, 5)
LATER = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def py(project, version, filename=None, uploaded="2024-01-01T10:00:00Z", **doc):
    eco = ecosystem_for("pypi")
    name = eco.normalize(project)
    filename = filename or f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    record = {"filename": filename, "upload-time": uploaded, **doc} if uploaded else doc
    return eco.candidate(name, filename, version, record)


def r(package, version, archive=False, **fields):
    eco = ecosystem_for("cran")
    unit = f"src/contrib/Archive/{package}" if archive else "src/contrib"
    record = {"Package": package, "Version": version, **fields}
    return eco.candidate(unit, f"{package}_{version}.tar.gz", version, record)


def conda(name, version, subdir="noarch", **fields):
    eco = ecosystem_for("conda")
    record = {"name": name, "version": version, "build": "0", "subdir": subdir, **fields}
    return eco.candidate(subdir, f"{name}-{version}-0.conda", version, record)


def advisory(osv_id, ecosystem, name, *, fixed=None, versions=(), score=None, aliases=()):
    events = [{"introduced": "0"}] + ([{"fixed": fixed}] if fixed else [])
    affected = {
        "ecosystem": ecosystem,
        "name": name,
        "ranges": [{"type": "ECOSYSTEM", "events": events}] if fixed or not versions else [],
        "versions": list(versions),
    }
    return Advisory(
        osv_id,
        Decimal(score) if score is not None else None,
        "reported",
        [affected],
        tuple(aliases),
        osv_id.startswith("MAL-") or any(a.startswith("MAL-") for a in aliases),
    )


def compiled(kind, advisories=(), mapping=None, waivers=(), today=TODAY, **rules):
    policy = Policy(name="p", package_type=kind, **rules) if rules or kind else None
    eco = ecosystem_for(kind)
    return CompiledPolicy(
        policy,
        AdvisoryIndex(eco, advisories, mapping),
        today=today,
        ecosystem=eco,
        waivers=waivers,
    )


def decide(policy, candidates):
    decisions = policy.decide_all(candidates)
    return {c.filename: decisions[c.key] for c in candidates}


# --- Advisories stay in their ecosystem ------------------------------------------------------


def test_pypi_advisories_match_python_packages_by_normalized_name_and_pep440_versions():
    old, new = py("Requests", "2.31.0"), py("requests", "2.32.0")
    pre = py("requests", "2.32.0rc1")
    found = advisory(
        "GHSA-9wx4-h78v-vm56",
        "PyPI",
        "requests",
        fixed="2.32.0",
        score="5.6",
        aliases=["CVE-2024-35195"],
    )
    decisions = decide(compiled("pypi", [found], cve_score="5.0"), [old, new, pre])
    assert not decisions[old.filename].allowed
    assert decisions[old.filename].reason == (
        "GHSA-9wx4-h78v-vm56 (CVE-2024-35195) score 5.6 ≥ 5.0"
    )
    assert decisions[old.filename].rule == "cve-score"
    assert decisions[old.filename].advisory == "GHSA-9wx4-h78v-vm56"
    assert decisions[new.filename].allowed
    assert not decisions[pre.filename].allowed  # 2.32.0rc1 < 2.32.0 under PEP 440


def test_advisories_of_another_ecosystem_never_match():
    found = [
        advisory("RSEC-2023-1", "CRAN", "requests", score="9.8"),
        advisory("GHSA-aaaa", "PyPI", "curl", score="9.8"),
        advisory("GHSA-bbbb", "npm", "requests", score="9.8"),
    ]
    decisions = decide(compiled("pypi", found, cve_score="1.0"), [py("requests", "1.0")])
    assert all(d.allowed for d in decisions.values())
    conda_side = decide(compiled("conda", found, cve_score="1.0"), [conda("curl", "1.0")])
    assert all(d.allowed for d in conda_side.values())  # no mapping: a PyPI name is not conda's


def test_cran_advisories_compare_versions_as_r_does():
    found = advisory("RSEC-2023-8", "CRAN", "readxl", fixed="1.10", score="7.5")
    nine, ten = r("readxl", "1.9"), r("readxl", "1.10")  # 1.10 > 1.9 for R
    dash = r("readxl", "1.4-3")
    decisions = decide(compiled("cran", [found], cve_score="7.0"), [nine, ten, dash])
    assert not decisions[nine.filename].allowed
    assert not decisions[dash.filename].allowed
    assert decisions[ten.filename].allowed
    other_case = decide(compiled("cran", [found], cve_score="7.0"), [r("ReadXL", "1.0")])
    assert all(d.allowed for d in other_case.values())  # R names are case-sensitive


def test_conda_reaches_pypi_advisories_only_through_the_name_mapping():
    found = advisory("GHSA-jfhm-5ghh-2f97", "PyPI", "cryptography", fixed="41.0.0", score="7.5")
    package = conda("cryptography", "40.0.2")
    lookalike = conda("py-cryptography", "40.0.2")
    mapping = {"py-cryptography": [("PyPI", "cryptography")]}
    decisions = decide(compiled("conda", [found], mapping, cve_score="7.0"), [package, lookalike])
    assert decisions[package.filename].allowed  # same name, not mapped: not the same software
    assert not decisions[lookalike.filename].allowed
    assert decisions[lookalike.filename].reason == (
        "GHSA-jfhm-5ghh-2f97 score 7.5 ≥ 7.0 (PyPI cryptography, by the conda name mapping)"
    )


def test_malicious_entries_block_every_listed_version_without_any_rule():
    found = advisory("MAL-2024-1234", "PyPI", "reqeusts", versions=["1.0.0", "1.0.1"])
    bad, clean = py("reqeusts", "1.0.1"), py("reqeusts", "0.9")
    decisions = decide(compiled("pypi", [found]), [bad, clean])
    assert decisions[bad.filename].allowed is False
    assert decisions[bad.filename].rule == "malicious"
    assert decisions[bad.filename].reason == "malicious package: MAL-2024-1234"
    assert decisions[clean.filename].allowed
    # No policy at all: the malicious rule still applies.
    bare = CompiledPolicy(
        None,
        AdvisoryIndex(ecosystem_for("pypi"), [found]),
        today=TODAY,
        ecosystem=ecosystem_for("pypi"),
    )
    assert not decide(bare, [bad])[bad.filename].allowed


def test_malicious_beats_scores_exclusions_and_dry_runs_but_not_a_waiver():
    found = advisory("MAL-2024-7", "CRAN", "evil", versions=["1.0"])
    package = r("evil", "1.0")
    permissive = compiled(
        "cran",
        [found],
        cve_score="10",
        cve_score_comparator="<=",
        exclusions=["evil"],
        mode="dry_run",
    )
    assert decide(permissive, [package])[package.filename].rule == "malicious"
    waiver = WaiverRule(
        ecosystem_for("cran").parse_spec("evil (== 1.0)"),
        "MAL-2024-7",
        "alice",
        LATER,
        "reviewed: false positive",
    )
    waived = compiled("cran", [found], waivers=[waiver], exclusions=[])
    decision = decide(waived, [package])[package.filename]
    assert decision.allowed
    assert "waived by alice until 2027-01-01" in decision.waived
    assert "reviewed: false positive" in decision.waived


# --- Package rules in each ecosystem's syntax -------------------------------------------------


def test_python_allow_and_block_rules_use_pep440_specifiers():
    files = [py("urllib3", "1.26.18"), py("urllib3", "2.2.1"), py("idna", "3.7")]
    decisions = decide(compiled("pypi", allow_specs=["urllib3 >=2"]), files)
    assert [d.allowed for d in decisions.values()] == [False, True, False]
    assert decisions[files[0].filename].reason == "not in the allow list"
    decisions = decide(compiled("pypi", block_specs=["URLLib3 <2"]), files)
    assert [d.allowed for d in decisions.values()] == [False, True, True]
    assert decisions[files[0].filename].reason == "blocked by package rule 'URLLib3 <2'"


def test_r_allow_list_brings_the_dependency_closure_with_version_constraints():
    files = [
        r("dplyr", "1.1.4", Imports="rlang (>= 1.1.0), vctrs", Depends="R (>= 3.5.0)"),
        r("rlang", "1.0.6"),
        r("rlang", "1.1.3"),
        r("vctrs", "0.6.5", Imports="rlang (>= 1.0.6)"),
        r("ggplot2", "3.5.0"),
    ]
    decisions = decide(compiled("cran", allow_specs=["dplyr"], include_dependencies=True), files)
    allowed = {name for name, d in decisions.items() if d.allowed}
    assert allowed == {
        "dplyr_1.1.4.tar.gz",
        "rlang_1.1.3.tar.gz",
        "vctrs_0.6.5.tar.gz",
        "rlang_1.0.6.tar.gz",
    }  # rlang 1.0.6 is what vctrs (>= 1.0.6) may take
    assert decisions["vctrs_0.6.5.tar.gz"].reason == "dependency of dplyr"
    assert decisions["ggplot2_3.5.0.tar.gz"].reason == "not in the allow list"


def test_r_license_rules_read_r_spellings():
    files = [r("a", "1", License="GPL (>= 2)"), r("b", "1", License="MIT + file LICENSE")]
    decisions = decide(compiled("cran", licenses_exclude=["GPL"]), files)
    assert not decisions["a_1.tar.gz"].allowed and decisions["b_1.tar.gz"].allowed


@pytest.mark.parametrize(
    ("kind", "fresh", "old"),
    [
        (
            "conda",
            conda("x", "2", timestamp=int(dt.datetime(2026, 12, 3, tzinfo=dt.UTC).timestamp())),
            conda("x", "1", timestamp=int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())),
        ),
        (
            "pypi",
            py("x", "2", uploaded="2026-12-03T23:59:00Z"),
            py("x", "1", uploaded="2026-11-01"),
        ),
        (
            "cran",
            r("x", "2", **{"Date/Publication": "2026-12-03 23:59:00 UTC"}),
            r("x", "1", **{"Date/Publication": "2026-11-01 10:00:00 UTC"}),
        ),
    ],
)
def test_cooldown_in_every_ecosystem_lets_a_package_in_once_old_enough(kind, fresh, old):
    policy = compiled(kind, min_age_days=3)
    decisions = decide(policy, [fresh, old])
    assert decisions[fresh.filename].rule == "cooldown"
    assert "published 2026-12-03, newer than the 3-day cooldown" in decisions[fresh.filename].reason
    assert decisions[old.filename].allowed
    # The next day boundary: on 2026-12-06 the file is three days old and enters.
    assert decide(compiled(kind, min_age_days=3, today=dt.date(2026, 12, 6)), [fresh])[
        fresh.filename
    ].allowed


def test_cooldown_without_a_publication_time_counts_from_when_psm_first_saw_it():
    archived = r("x", "0.9", archive=True)  # Archive listings give no date
    archived.first_seen = dt.date(2026, 12, 4)
    decision = decide(compiled("cran", min_age_days=7), [archived])[archived.filename]
    assert decision.reason == "first seen 2026-12-04, newer than the 7-day cooldown"


# --- Waivers and dry runs ---------------------------------------------------------------------


def test_a_waiver_covers_one_advisory_by_alias_and_the_next_violation_still_applies():
    eco = ecosystem_for("pypi")
    found = [
        advisory("GHSA-1111", "PyPI", "jinja2", fixed="3.1.4", score="9.0", aliases=["CVE-1"]),
        advisory("GHSA-2222", "PyPI", "jinja2", fixed="3.1.3", score="8.0"),
    ]
    waiver = WaiverRule(eco.parse_spec("jinja2 <3.2"), "CVE-1", "bob", LATER, "not reachable")
    package, later = py("jinja2", "3.1.2"), py("jinja2", "3.1.3")
    decisions = decide(compiled("pypi", found, waivers=[waiver], cve_score="7.0"), [package, later])
    assert decisions[package.filename].reason.startswith("GHSA-2222 score 8.0")
    assert "waived by bob" in decisions[package.filename].waived
    assert decisions[later.filename].allowed  # only GHSA-1111 applied, and it is waived
    assert "GHSA-1111 (CVE-1) score 9.0 ≥ 7.0: waived by bob" in decisions[later.filename].waived


def test_a_waiver_may_name_a_rule_and_only_matching_packages():
    eco = ecosystem_for("cran")
    waiver = WaiverRule(eco.parse_spec("newpkg"), "cooldown", "carol", LATER, "urgent fix")
    files = [
        r("newpkg", "1", **{"Date/Publication": "2026-12-05 08:00:00 UTC"}),
        r("other", "1", **{"Date/Publication": "2026-12-05 08:00:00 UTC"}),
    ]
    decisions = decide(compiled("cran", waivers=[waiver], min_age_days=7), files)
    assert decisions["newpkg_1.tar.gz"].allowed and decisions["newpkg_1.tar.gz"].waived
    assert decisions["other_1.tar.gz"].rule == "cooldown"


def test_dry_run_lets_everything_in_and_says_what_it_would_block():
    files = [py("urllib3", "1.26.18"), py("urllib3", "2.2.1")]
    decisions = decide(compiled("pypi", block_specs=["urllib3 <2"], mode="dry_run"), files)
    first = decisions[files[0].filename]
    assert first.allowed and first.would_block == "blocked by package rule 'urllib3 <2'"
    assert decisions[files[1].filename].would_block == ""


def test_filters_then_policy_in_one_decider():
    eco = ecosystem_for("pypi")
    files = [py("a", "1.0"), py("a", "2.0rc1"), py("b", "1.0")]

    def filters(candidates):
        return {c.key: ("pre-release" if "rc" in c.version else "") for c in candidates}

    decider = Decider(compiled("pypi", block_specs=["b"]), filters)
    decisions = decider.decide_all(files)
    assert [decisions[c.key].rule for c in files] == ["", "filter", "block"]
    decision, outcomes = decider.explain(files[2])
    assert not decision.allowed
    assert {o.rule: o.outcome for o in outcomes}["block"] == "block"
    assert eco.kind == "pypi"


def test_explain_names_every_rule_with_its_outcome():
    found = advisory("GHSA-3333", "PyPI", "flask", fixed="2.3.2", score="7.5")
    policy = compiled("pypi", [found], cve_score="7.0", min_age_days=2, block_specs=["x"])
    outcomes = {o.rule: (o.outcome, o.detail) for o in policy.explain(py("flask", "2.3.1"))}
    assert outcomes["cve-score"] == ("block", "GHSA-3333 score 7.5 ≥ 7.0")
    assert outcomes["cooldown"] == ("pass", "published 2024-01-01")
    assert outcomes["block"][0] == "pass"
    assert outcomes["license"] == ("not set", "")
    assert outcomes["malicious"] == ("pass", "advisories: GHSA-3333")


def test_policies_refuse_rules_their_package_type_cannot_judge():
    from django.core.exceptions import ValidationError

    policy = Policy(
        name="py", package_type="pypi", licenses_exclude=["GPL"], allow_specs=["numpy[build=x]"]
    )
    with pytest.raises(ValidationError) as caught:
        policy.clean()
    errors = caught.value.message_dict
    assert "a Python simple index gives no license" in errors["licenses_exclude"][0]
    assert "PEP 440" in errors["allow_specs"][0]
    Policy(name="r", package_type="cran", allow_specs=["dplyr (>= 1.1)"]).clean()


def test_r_archive_versions_are_judged_by_the_current_versions_license():
    current = r("readr", "2.1.5", License="GPL-3")
    archived = r("readr", "2.1.4", archive=True)  # Archive listings give no License
    other = r("gone", "0.1", archive=True)  # no current version: the license stays unknown
    decisions = decide(
        compiled("cran", licenses_exclude=["GPL"], unknown_license="block"),
        [current, archived, other],
    )
    assert decisions[archived.filename].reason == "license GPL-3 is excluded (GPL)"
    assert decisions[other.filename].reason == "license unknown"

"""Deciding files one at a time as they are read (`OneByOne`, a first load's path): the same
decisions as deciding them all together, for every rule kind a file can be decided by alone.
Policies with a rule that reads other files (`decides_alone` False) are decided together."""

from __future__ import annotations

import pytest

from benchmarks import policy_data
from policies_app.ecosystems import Candidate
from policies_app.engine import CompiledPolicy, OneByOne
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


def _one_by_one(policy: CompiledPolicy, candidates: list[Candidate]) -> dict:
    one = OneByOne(policy)
    decisions, unit = {}, None
    for candidate in candidates:
        if candidate.unit != unit:
            one.unit_read()
            unit = candidate.unit
        decisions[candidate.key] = one.decide(candidate)
    assert one.in_order
    return decisions


@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
def test_conda_files_decided_one_by_one_as_all_together(mode):
    case = policy_data.conda_case(4000, 200, 100)
    policy = _alone(case, mode)
    assert policy.decides_alone and not policy.legacy and policy.waivers and policy.allow
    candidates = _as_read(case.make_candidates())
    expected = policy.decide_all(candidates)
    got = _one_by_one(policy, candidates)
    assert got == expected
    # Every kind of decision was made, the legacy rule's included.
    reasons = {d.reason or d.would_block for d in got.values()}
    assert len(reasons) > 10
    assert any("legacy" in r for r in reasons)
    assert any(d.waived for d in got.values())
    assert any(d.reason.startswith("kept by exclusion") for d in got.values())


@pytest.mark.parametrize("mode", ["enforce", "dry_run"])
def test_python_files_decided_one_by_one_as_all_together(mode):
    case = policy_data.python_case(300, 8, 60, 30)
    policy = _alone(case, mode)
    assert policy.decides_alone
    candidates = _as_read(case.make_candidates())
    assert _one_by_one(policy, candidates) == policy.decide_all(candidates)


def test_r_files_decided_one_by_one_as_all_together_without_license_rules():
    case = policy_data.r_case(300, 60, 30)
    case.policy.licenses_include = case.policy.licenses_exclude = []
    policy = _alone(case, "enforce")
    assert policy.decides_alone
    candidates = _as_read(case.make_candidates())
    assert _one_by_one(policy, candidates) == policy.decide_all(candidates)


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

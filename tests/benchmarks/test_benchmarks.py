"""The benchmarks in small form: their data exercises what they claim to measure."""

from __future__ import annotations

import pytest
from django.db import connection

from benchmarks import bench_enforce, bench_policy, policy_data
from policies_app.engine import RULES

#: Every rule kind of the engine, and the mirror filters of Python and R; less the kinds a
#: package type's index gives no data for (`Ecosystem.unsupported_rules`).
ALL = set(RULES)


@pytest.mark.parametrize(
    ("case", "blocked", "let_in"),
    [
        (
            lambda: policy_data.conda_case(4000, 200, 100),
            ALL,
            {"dependency", "exclusion", "waived"},
        ),
        (
            lambda: policy_data.python_case(2000, 5, 200, 20),
            ALL - {"platform", "license", "legacy"} | {"filter"},
            {"exclusion", "waived"},
        ),
        (
            lambda: policy_data.r_case(2000, 80, 20),
            ALL - {"platform", "legacy"} | {"filter"},
            {"dependency", "exclusion", "waived"},
        ),
    ],
    ids=["conda", "pypi", "cran"],
)
def test_policy_benchmark_data_meets_every_rule_kind(case, blocked, let_in):
    result = bench_policy.measure(case())

    assert set(result["blocked_by_rule"]) == blocked
    assert let_in <= set(result["let_in_by"])
    assert result["allowed"] > 0
    assert result["decisions_per_s"] > 0 and result["check_per_s"] > 0


def test_policy_benchmark_data_is_deterministic():
    first = [(c.key, c.record) for c in policy_data.r_case(300, 20).make_candidates()]
    again = [(c.key, c.record) for c in policy_data.r_case(300, 20).make_candidates()]

    assert first == again


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the benchmark loads its rows with PostgreSQL's COPY"
)
@pytest.mark.parametrize(
    ("use_service", "via"),
    [(None, "enforcement.enforce"), (False, "packages_decide + publish")],
)
def test_enforcement_benchmark_unlists_the_affected_files(db, tmp_path, use_service, via):
    result = bench_enforce.run(2000, 4, 200, tmp_path, use_service=use_service)

    assert result["ok"], result
    assert result["via"] == via and result["published"]
    assert result["decide_s"] >= 0 and result["publish_s"] >= 0
    assert result["affected_files"] == result["affected_listed_before"] > 0
    assert result["left"] == result["affected_files"]
    assert result["listed_after"] == result["listed_before"] - result["affected_files"]


def test_policy_benchmark_runs_in_smoke_form(tmp_path):
    out = tmp_path / "policy.json"

    (result,) = bench_policy.main(["--smoke", "--only", "cran", "--json", str(out)])

    assert result["kind"] == "cran" and result["files"] == 2500
    assert result["peak_rss_mb"] > 0
    assert out.exists()


@pytest.mark.parametrize(
    "case",
    [
        lambda: policy_data.conda_case(4000, 200, 100),
        lambda: policy_data.r_case(1000, 80, 20),
    ],
    ids=["conda", "cran"],
)
def test_compact_records_get_the_same_decisions_as_whole_ones(case):
    """`Ecosystem.compact` (what `packages_decide` holds per file) keeps all the engine reads."""
    import dataclasses

    from policies_app.ecosystems import ecosystem_for

    case = case()
    whole = case.make_candidates()
    shared: dict = {}
    eco = ecosystem_for(case.kind)
    compact = [
        dataclasses.replace(c, record=eco.compact(dict(c.record), shared), _parsed=None)
        for c in whole
    ]
    if case.kind == "conda":
        assert any(len(c.record) < len(w.record) for c, w in zip(compact, whole, strict=True))
    assert case.decider().decide_all(compact) == case.decider().decide_all(whole)

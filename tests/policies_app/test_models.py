"""Policy rules: bad input gives a clear error naming the field."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from policies_app.models import Policy

pytestmark = pytest.mark.django_db


def _errors(policy: Policy) -> dict[str, list[str]]:
    """What `full_clean` finds wrong with `policy`, by field: empty when it is valid."""
    try:
        policy.full_clean()
    except ValidationError as error:
        return error.message_dict
    return {}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "allow_specs",
            ["numpy >=>=1"],
            "Not conda MatchSpecs (e.g. 'numpy >=1.26'): 'numpy >=>=1'",
        ),
        ("block_specs", [""], "empty MatchSpec"),
        ("exclusions", ["numpy*"], "Not conda MatchSpecs"),
        ("platforms_include", ["linux-64", "amiga-68k"], "Unknown platform(s): amiga-68k"),
        ("licenses_exclude", ["not a license!"], "Unknown license(s): not a license!"),
        ("cve_score", -1, "greater than or equal to 0"),
        ("cve_score", 11, "less than or equal to 10"),
        ("cve_score_comparator", "=<", "is not a valid choice"),
        ("cve_statuses_excluded", ["fixed"], "CVE statuses are"),
        ("allow_specs", "numpy", "Give a list of package rules"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(field, value, message):
    errors = _errors(Policy(name="p", **{field: value}))
    assert any(message in text for text in errors.get(field, [])), errors


def test_contradictory_rules_are_refused():
    policy = Policy(name="p", platforms_include=["linux-64"], platforms_exclude=["linux-64"])
    with pytest.raises(ValidationError, match="Both included and excluded: linux-64"):
        policy.full_clean()
    policy = Policy(name="q", created_after="2024-01-01", created_before="2023-01-01")
    with pytest.raises(ValidationError, match="Must not be before"):
        policy.full_clean()


def test_a_policy_with_every_rule_is_valid():
    policy = Policy(
        name="all",
        platforms_include=["linux-64", "noarch"],
        licenses_include=["MIT", "BSD-3-Clause"],
        licenses_exclude=["GPL3"],
        unknown_license="block",
        cve_score=7,
        cve_score_comparator="<=",
        cve_statuses_excluded=["active", "reported"],
        allow_specs=["numpy >=1.26", "python 3.12.*", "pytorch[build=*cuda*]"],
        block_specs=["openssl <3"],
        include_dependencies=True,
        min_age_days=7,
        exclusions=["ca-certificates"],
    )
    assert _errors(policy) == {}

"""Mirror filters of standard R mirrors: options, specs, licenses, R versions, dependencies."""

from __future__ import annotations

import pytest

from channels_app.formats import FORMATS, OptionsError
from channels_app.formats.cran_filters import (
    RFile,
    archived_names,
    decide,
    dependencies,
    parse_dependencies,
    parse_spec,
    r_license_families,
)

cran = FORMATS["cran"]


def _file(name, version, unit="src/contrib", **fields) -> RFile:
    document = {"Package": name, "Version": version, **fields}
    if unit != "src/contrib":
        document = {"Package": name, "Version": version}  # archive files have no stanza
    filename = f"{name}_{version}.tar.gz"
    return RFile(f"{unit}/{filename}", unit, filename, version, document)


FILES = [
    _file("alpha", "1.0", Imports="beta (>= 1.0), utils", License="MIT + file LICENSE"),
    _file("alpha", "2.0", Imports="beta", License="MIT + file LICENSE"),
    _file("beta", "1.5", Depends="R (>= 3.5), gamma", LinkingTo="Rcpp", License="GPL-2 | GPL-3"),
    _file("gamma", "0.1-1", Depends="R (>= 4.4.0)", License="GPL (>= 2)"),
    _file("Rcpp", "1.0.12", License="GPL (>= 2)"),
    _file("delta", "3.0", License="Apache License (== 2.0)"),
    _file("gamma", "0.1-0", unit="src/contrib/Archive/gamma"),
]


def _entering(options) -> list[str]:
    decisions = decide(cran.clean_options({"archive": True, **options}), FILES)
    return sorted(key.rsplit("/", 1)[1] for key, reason in decisions.items() if not reason)


def _reasons(options) -> dict[str, str]:
    decisions = decide(cran.clean_options({"archive": True, **options}), FILES)
    return {key.rsplit("/", 1)[1]: reason for key, reason in decisions.items() if reason}


def test_no_options_let_everything_in():
    assert len(_entering({})) == len(FILES)


def test_archive_files_leave_when_the_option_is_switched_off():
    assert _reasons({"archive": False}) == {"gamma_0.1-0.tar.gz": "archive versions not mirrored"}


def test_specs_read_r_and_pep_style_constraints():
    spec = parse_spec("Rcpp (>= 1.0, < 2)")
    assert (spec.name, str(spec)) == ("Rcpp", "Rcpp (>= 1.0, < 2)")
    assert str(parse_spec("Rcpp >=1.0,<2")) == "Rcpp (>= 1.0, < 2)"
    assert spec.contains((1, 0, 12)) and not spec.contains((2, 0)) and not spec.contains((0, 9))
    assert parse_spec("  data.table ").constraints == ()
    for bad in ("../x", "a b", "x", "pkg (~= 1.0)", "pkg (>= 1.0a)", "pkg (>= )"):
        with pytest.raises(ValueError):
            parse_spec(bad)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"packages": "alpha"}, "packages must be a list"),
        ({"packages": ["alpha (>= one)"]}, "packages: 'alpha (>= one)'"),
        ({"exclude": ["../etc"]}, "exclude: '../etc'"),
        ({"licenses": ["not a license!"]}, "licenses: 'not a license!'"),
        ({"r_version": "four"}, "r_version: 'four' is not an R version"),
        ({"latest": 0}, "latest must be a positive whole number"),
        ({"dependencies": "yes"}, "dependencies must be true or false"),
        ({"archive": 1}, "archive must be true or false"),
        ({"subdirs": ["x"]}, "unknown R mirror options: subdirs"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cran.clean_options(options)


def test_options_are_normalized():
    cleaned = cran.clean_options(
        {"packages": ["beta>=1", "alpha"], "licenses": ["gpl", "mit"], "r_version": " 4.3.1 "}
    )
    assert cleaned == {
        "packages": ["alpha", "beta (>= 1)"],
        "licenses": ["GPL", "MIT"],
        "r_version": "4.3.1",
    }


def test_package_list_with_versions_brings_its_dependencies():
    assert _entering({"packages": ["alpha (>= 2)"]}) == [
        "Rcpp_1.0.12.tar.gz",  # beta links to it
        "alpha_2.0.tar.gz",
        "beta_1.5.tar.gz",
        "gamma_0.1-0.tar.gz",  # beta depends on gamma: every version of it
        "gamma_0.1-1.tar.gz",
    ]
    assert _reasons({"packages": ["alpha (>= 2)"]}) == {
        "alpha_1.0.tar.gz": "not in the package list",
        "delta_3.0.tar.gz": "not in the package list",
    }


def test_dependencies_can_be_left_out():
    assert _entering({"packages": ["alpha"], "dependencies": False}) == [
        "alpha_1.0.tar.gz",
        "alpha_2.0.tar.gz",
    ]


def test_block_list_drops_versions_and_dependencies_still_pass_it():
    assert _reasons({"exclude": ["alpha (< 2)", "delta"]}) == {
        "alpha_1.0.tar.gz": "excluded by the block list",
        "delta_3.0.tar.gz": "excluded by the block list",
    }
    entering = _entering({"packages": ["alpha"], "exclude": ["gamma"]})
    assert not any(name.startswith("gamma") for name in entering)


def test_licenses_understand_r_spellings():
    assert {"GPL", "GPL2"} <= r_license_families("GPL (>= 2)")
    assert {"GPL2", "GPL3"} <= r_license_families("GPL-2 | GPL-3")
    assert "MIT" in r_license_families("MIT + file LICENSE")
    assert "APACHE" in r_license_families("Apache License (== 2.0)")
    assert "BSD" in r_license_families("BSD_3_clause + file LICENSE")
    assert "LGPL" in r_license_families("LGPL (>= 2.1)")
    assert r_license_families("file LICENSE") == frozenset()


def test_license_allow_and_block_lists():
    assert _reasons({"licenses": ["MIT", "GPL"]}) == {"delta_3.0.tar.gz": "license not allowed"}
    reasons = _reasons({"exclude_licenses": ["GPL3"]})
    assert reasons == {"beta_1.5.tar.gz": "license excluded"}


def test_archive_versions_are_judged_by_their_packages_current_entry():
    reasons = _reasons({"licenses": ["MIT"]})
    assert reasons["gamma_0.1-0.tar.gz"] == "license not allowed"  # gamma is GPL


def test_r_version_drops_packages_needing_another_r():
    reasons = _reasons({"r_version": "4.3.2"})
    assert reasons == {
        "gamma_0.1-1.tar.gz": "does not install on R 4.3.2",
        "gamma_0.1-0.tar.gz": "does not install on R 4.3.2",  # judged by the current entry
    }
    assert _reasons({"r_version": "4.4.0"}) == {}


def test_latest_counts_across_current_and_archive_versions():
    assert _reasons({"latest": 1}) == {
        "alpha_1.0.tar.gz": "not among the latest 1 versions",
        "gamma_0.1-0.tar.gz": "not among the latest 1 versions",
    }


def test_a_dependency_missing_from_the_source_or_a_cycle_is_fine():
    files = [
        _file("aa", "1.0", Imports="bb, missing.pkg, methods"),
        _file("bb", "1.0", Imports="aa"),
    ]
    decisions = decide({"packages": ["aa"], "archive": True}, files)
    assert set(decisions.values()) == {""}


def test_a_dependency_is_its_leading_name_whatever_follows_as_r_reads_it():
    """R takes the leading letters, digits and dots of each part as the name (`foo [x]` is
    foo), and a constraint from the parentheses right after it."""
    document = {"Imports": "foo [x], bar(>= 1.2) extra, 3d.pkg, (odd)", "Depends": "R (>= 4.1)"}
    assert dependencies(document) == ["foo", "bar", "3d.pkg"]
    (found,) = [c for name, c in parse_dependencies(document["Imports"]) if name == "bar"]
    assert [tuple(constraint) for constraint in found] == [(">=", (1, 2))]


def test_dependencies_ignore_r_and_base_packages():
    document = {
        "Depends": "R (>= 4.0), methods, stats4",
        "Imports": "\n    grDevices,\n    cli (>= 3.0),\n   rlang",
        "LinkingTo": "cpp11",
        "Suggests": "testthat",
    }
    assert dependencies(document) == ["cli", "rlang", "cpp11"]


@pytest.mark.parametrize(
    ("options", "folders"),
    [
        ({}, ["Rcpp", "alpha", "beta", "delta", "gamma"]),
        ({"packages": ["alpha (< 2)"]}, ["Rcpp", "alpha", "beta", "gamma"]),  # the closure
        ({"packages": ["alpha"], "dependencies": False}, ["alpha"]),
        ({"packages": ["alpha"], "exclude": ["beta"]}, ["alpha"]),  # beta blocked: no gamma
        ({"packages": ["alpha"], "r_version": "4.3.0"}, ["Rcpp", "alpha", "beta"]),
        ({"packages": ["alpha"], "licenses": ["MIT", "GPL2"]}, ["Rcpp", "alpha", "beta", "gamma"]),
        ({"exclude_licenses": ["GPL"]}, ["alpha", "delta"]),
    ],
)
def test_archive_folders_read_are_those_of_every_package_that_may_enter(options, folders):
    # As `decide` chooses current versions: dependencies by the current entries, and a package
    # whose current entry the license or R filters refuse has no version that enters.
    current = {f.name: f.document for f in FILES if f.unit == "src/contrib"}
    cleaned = cran.clean_options({"archive": True, **options})
    assert sorted(archived_names(cleaned, current)) == folders

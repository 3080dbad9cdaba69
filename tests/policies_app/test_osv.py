"""OSV advisories: parsing, CVSS scores, files and archives, loading, the command and matching."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rattler import Version

from policies_app import cvss, osv, osv_matching, services, tasks
from policies_app.models import Vulnerability

FIXTURES = Path(__file__).parent.parent / "fixtures" / "osv"
GOOD_IDS = [
    "GHSA-3f63-hfp8-52jq",
    "GHSA-j8r2-6x86-q33q",
    "GHSA-v845-jxx5-vc9f",  # pypi/
    "MAL-2023-1578",  # pypi/
    "PSM-2023-0286",  # conda/
    "PYSEC-2014-8",
    "PYSEC-2022-42969",
    "PYSEC-2023-212",  # pypi/
    "PYSEC-2023-45",  # pypi/
    "RSEC-2023-0",  # cran/
    "RSEC-2023-2",  # cran/
]
GOOD = len(GOOD_IDS)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def compare(a: str, b: str) -> int:
    left, right = Version(a), Version(b)
    return (left > right) - (left < right)


def split(items) -> tuple[list[osv.Advisory], list[osv.OSVError]]:
    items = list(items)
    return (
        [i for i in items if isinstance(i, osv.Advisory)],
        [i for i in items if isinstance(i, osv.OSVError)],
    )


# --- CVSS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "9.8"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", "8.8"),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", "5.5"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "7.5"),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", "8.1"),
        # Scope changed: the 1.08 factor and the higher PR weights.
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", "10.0"),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", "9.9"),
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", "6.1"),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N", "6.1"),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", "1.6"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", "0.0"),
        # Metrics in any order; temporal metrics do not change the base score.
        ("CVSS:3.1/S:U/C:H/I:H/A:H/AV:N/AC:L/PR:N/UI:N/E:U/RL:O", "9.8"),
    ],
)
def test_cvss3_base_score(vector, score):
    assert cvss.cvss3_base_score(vector) == Decimal(score)


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P", "7.5"),
        ("AV:N/AC:M/Au:N/C:N/I:P/A:N", "4.3"),
        ("AV:L/AC:L/Au:N/C:C/I:C/A:C", "7.2"),
        ("(AV:N/AC:L/Au:N/C:C/I:C/A:C)", "10.0"),
        ("AV:N/AC:L/Au:N/C:N/I:N/A:N", "0.0"),
    ],
)
def test_cvss2_base_score(vector, score):
    assert cvss.cvss2_base_score(vector) == Decimal(score)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:3.0/"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", "missing metric(s) A"),
        ("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "AV:X is not a valid value"),
        ("CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "AV is given twice"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1", "unknown metric(s) ZZ"),
        ("CVSS:3.1/AV:N/AC", "'AC' is not METRIC:VALUE"),
        ("CVSS:3.1/", "missing metric(s) AV"),
    ],
)
def test_cvss3_rejects_bad_vectors(vector, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cvss.cvss3_base_score(vector)


# --- Parsing --------------------------------------------------------------------------------


def test_parse_pypi_advisory_with_a_cvss3_vector():
    advisory = osv.parse_advisory(fixture("GHSA-j8r2-6x86-q33q.json"), "requests.json")

    assert advisory == osv.Advisory(
        osv_id="GHSA-j8r2-6x86-q33q",
        aliases=["CVE-2023-32681", "PYSEC-2023-74"],
        summary="Unintended leak of Proxy-Authorization header in requests",
        cvss_score=Decimal("6.1"),
        cvss_vector="CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N",
        status="reported",
        affected=[
            {
                "ecosystem": "PyPI",
                "name": "requests",
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}
                ],
                "versions": [],
            }
        ],
        published_at=datetime(2023, 5, 22, 20, 36, 32, tzinfo=UTC),
        modified_at=datetime(2024, 6, 10, 22, 13, 24, 611153, tzinfo=UTC),
    )


def test_v3_is_preferred_over_v4_and_git_ranges_are_dropped():
    advisory = osv.parse_advisory(fixture("GHSA-3f63-hfp8-52jq.json"), "pillow.json")

    assert (advisory.cvss_score, advisory.cvss_vector) == (
        Decimal("8.1"),
        "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H",
    )
    assert [r["type"] for r in advisory.affected[0]["ranges"]] == ["ECOSYSTEM"]


def test_v2_only_advisory_and_summary_from_details():
    advisory = osv.parse_advisory(fixture("PYSEC-2014-8.json"), "jinja2.json")

    assert (advisory.cvss_score, advisory.cvss_vector) == (
        Decimal("4.4"),
        "AV:L/AC:M/Au:N/C:P/I:P/A:P",
    )
    assert advisory.summary.startswith("The default configuration for bccache")
    assert "upstream changelog" not in advisory.summary  # only the first paragraph
    assert "2.7.1" in advisory.affected[0]["versions"]


def test_conda_package_and_database_specific_status_and_score():
    doc = fixture("conda/PSM-2023-0286.json")
    doc["database_specific"]["cvss_score"] = "7.45"
    advisory = osv.parse_advisory(doc, "openssl.json")

    assert advisory.status == "active"  # "Active" in the document
    assert advisory.cvss_score == Decimal("7.5")  # the explicit score wins over the vector's
    assert advisory.cvss_vector == "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:H"
    assert [(a["ecosystem"], a["name"]) for a in advisory.affected] == [
        ("conda", "openssl"),
        ("PyPI", "cryptography"),
    ]


def test_withdrawn_advisory_is_cleared_and_keeps_its_aliases():
    advisory = osv.parse_advisory(fixture("PYSEC-2022-42969.json"), "py.json")

    assert advisory.status == "cleared"
    assert advisory.aliases == ["CVE-2022-42969", "GHSA-w596-4wvx-j9j6"]
    assert advisory.cvss_score == Decimal("7.5")


def test_explicit_status_wins_over_withdrawn_and_unknown_status_is_reported():
    doc = fixture("PYSEC-2022-42969.json")
    doc["database_specific"] = {"status": "DISPUTED"}
    assert osv.parse_advisory(doc, "x").status == "disputed"

    doc = fixture("GHSA-j8r2-6x86-q33q.json")
    doc["database_specific"]["status"] = "under review"
    assert osv.parse_advisory(doc, "x").status == "reported"


def test_numeric_severity_scores():
    doc = {"id": "X-1", "severity": [{"type": "CVSS_V3", "score": 9.1}]}
    assert osv.parse_advisory(doc, "x").cvss_score == Decimal("9.1")

    advisory = osv.parse_advisory(
        {"id": "X-2", "severity": [{"type": "CVSS_V3", "score": "5"}]}, "x"
    )
    assert (advisory.cvss_score, advisory.cvss_vector) == (Decimal("5.0"), "")


def test_v4_only_keeps_the_vector_without_a_score_and_v2_is_the_fallback():
    v4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
    advisory = osv.parse_advisory(
        {"id": "X-1", "severity": [{"type": "CVSS_V4", "score": v4}]}, "x"
    )
    assert (advisory.cvss_score, advisory.cvss_vector) == (None, v4)

    doc = {
        "id": "X-2",
        "severity": [
            {"type": "CVSS_V4", "score": v4},
            {"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"},
        ],
    }
    advisory = osv.parse_advisory(doc, "x")
    assert (advisory.cvss_score, advisory.cvss_vector) == (
        Decimal("7.5"),
        "AV:N/AC:L/Au:N/C:P/I:P/A:P",
    )

    doc = {"id": "X-3", "severity": [{"type": "CVSS_V4", "score": v4}]}
    doc["database_specific"] = {"cvss_score": 9.3}
    assert osv.parse_advisory(doc, "x").cvss_score == Decimal("9.3")


def test_package_level_severity_counts_and_the_highest_wins():
    doc = {
        "id": "X-1",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "a"},
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"}
                ],
            },
            {
                "package": {"ecosystem": "PyPI", "name": "b"},
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
                ],
            },
            {"severity": [{"type": "Ubuntu", "score": "medium"}]},
        ],
    }
    advisory = osv.parse_advisory(doc, "x")

    assert advisory.cvss_score == Decimal("9.8")
    assert [a["name"] for a in advisory.affected] == ["a", "b"]  # no package: nothing to match


def test_minimal_advisory():
    advisory = osv.parse_advisory({"id": " OSV-2020-111 "}, "x")

    assert advisory == osv.Advisory(osv_id="OSV-2020-111")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "an advisory is a JSON object, not a list"),
        ({"summary": "no id"}, "missing 'id'"),
        ({"id": 12}, "missing 'id'"),
        ({"id": "X-" + "9" * 100}, "'id' is longer than 100 characters"),
        ({"id": "X-1", "aliases": "CVE-1"}, "'aliases' must be a list, not a string"),
        ({"id": "X-1", "aliases": [1]}, "'aliases' must be a list of strings"),
        ({"id": "X-1", "modified": "yesterday"}, "'modified' is not an RFC 3339 timestamp"),
        ({"id": "X-1", "summary": ["a"]}, "'summary' must be a string, not a list"),
        (
            {"id": "X-1", "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N"}]},
            "bad CVSS_V3 vector 'CVSS:3.1/AV:N': missing metric(s) AC",
        ),
        (
            {"id": "X-1", "severity": [{"type": "CVSS_V4", "score": "AV:N"}]},
            "bad CVSS_V4 vector",
        ),
        (
            {"id": "X-1", "database_specific": {"cvss_score": 11}},
            "database_specific.cvss_score must be a number from 0 to 10",
        ),
        ({"id": "X-1", "severity": {"type": "CVSS_V3"}}, "'severity' must be a list"),
        ({"id": "X-1", "affected": [{"package": {"name": "a"}}]}, "package.ecosystem' is missing"),
        (
            {
                "id": "X-1",
                "affected": [{"package": {"ecosystem": "PyPI", "name": "a"}, "ranges": [{}]}],
            },
            "'affected[0].ranges[0].type' is missing",
        ),
        (
            {
                "id": "X-1",
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "a"},
                        "ranges": [
                            {"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]}
                        ],
                    }
                ],
            },
            "'affected[0].ranges[0].events[0]' must have exactly one of",
        ),
        (
            {
                "id": "X-1",
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "a"},
                        "ranges": [{"type": "SEMVER", "events": [{"fixed": "1.0"}]}],
                    }
                ],
            },
            "has no 'introduced' event",
        ),
    ],
)
def test_parse_errors_are_clear(doc, message):
    with pytest.raises(osv.OSVError) as info:
        osv.parse_advisory(doc, "feed/x.json")

    assert str(info.value).startswith("feed/x.json")
    assert message in str(info.value)


def test_parse_error_names_the_advisory():
    with pytest.raises(osv.OSVError, match=r"^feed.json \(X-1\): 'modified'"):
        osv.parse_advisory({"id": "X-1", "modified": "no"}, "feed.json")


@pytest.mark.parametrize(
    ("name", "ecosystems", "score", "malicious", "ranges"),
    [
        ("pypi/GHSA-v845-jxx5-vc9f.json", "|PyPI|", Decimal("5.9"), False, 2),
        ("pypi/PYSEC-2023-212.json", "|PyPI|", Decimal("4.2"), False, 1),  # GIT range dropped
        ("pypi/PYSEC-2023-45.json", "|PyPI|", None, False, 1),
        ("pypi/MAL-2023-1578.json", "|PyPI|", None, True, 1),
        ("cran/RSEC-2023-2.json", "|CRAN|", None, False, 1),
        ("cran/RSEC-2023-0.json", "|CRAN|", None, False, 1),
    ],
)
def test_ecosystem_fixtures_read_as_osv_publishes_them(name, ecosystems, score, malicious, ranges):
    advisory = osv.parse_advisory(fixture(name), name)

    assert (advisory.ecosystems, advisory.cvss_score, advisory.malicious) == (
        ecosystems,
        score,
        malicious,
    )
    assert advisory.status == "reported"
    assert sum(len(entry["ranges"]) for entry in advisory.affected) == ranges
    assert {r["type"] for entry in advisory.affected for r in entry["ranges"]} == {"ECOSYSTEM"}


# --- Reading --------------------------------------------------------------------------------


def test_iter_directory_recursively_with_one_malformed():
    advisories, errors = split(osv.iter_advisories(FIXTURES))

    assert sorted(a.osv_id for a in advisories) == GOOD_IDS
    assert [str(e) for e in errors] == [f"{FIXTURES / 'malformed.json'}: missing 'id'"]


def test_iter_single_file_and_list_documents(tmp_path):
    advisories, errors = split(osv.iter_advisories(FIXTURES / "PYSEC-2014-8.json"))
    assert ([a.osv_id for a in advisories], errors) == (["PYSEC-2014-8"], [])

    many = tmp_path / "all.json"
    many.write_text(json.dumps([fixture("PYSEC-2014-8.json"), {"id": 3}]))
    advisories, errors = split(osv.iter_advisories(many))
    assert [a.osv_id for a in advisories] == ["PYSEC-2014-8"]
    assert [str(e) for e in errors] == [f"{many}[1]: missing 'id'"]


def test_iter_bad_files(tmp_path):
    (tmp_path / "broken.json").write_text('{"id": "X-1",')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "notes.txt").write_text("not an advisory")
    (tmp_path / ".hidden.json").write_text("{}")
    (tmp_path / "fake.zip").write_text("not a zip")

    errors = [str(e) for e in osv.iter_advisories(tmp_path)]

    assert len(errors) == 3
    assert errors[0].startswith(f"{tmp_path / 'binary.json'}: not valid JSON")
    assert errors[1].startswith(f"{tmp_path / 'broken.json'}: not valid JSON")
    assert errors[2].startswith(f"{tmp_path / 'fake.zip'}: not a readable zip archive")
    missing = tmp_path / "missing"
    assert [str(e) for e in osv.iter_advisories(missing)] == [
        f"{missing}: no such file or directory"
    ]


def make_zip(path: Path, extra: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(FIXTURES.rglob("*.json")):
            archive.write(file, file.name)
        archive.writestr("README", "ignored")
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return path


def test_iter_zip(tmp_path):
    archive = make_zip(tmp_path / "all.zip", {"not-json.json": "nope"})

    advisories, errors = split(osv.iter_advisories(archive))

    assert sorted(a.osv_id for a in advisories) == GOOD_IDS
    assert sorted(str(e).split(": ")[0] for e in errors) == [
        f"{archive}:malformed.json",
        f"{archive}:not-json.json",
    ]


def test_iter_zip_refuses_large_members(tmp_path, monkeypatch):
    monkeypatch.setattr(osv, "MAX_DOCUMENT_BYTES", 1500)
    archive = make_zip(tmp_path / "all.zip")

    advisories, errors = split(osv.iter_advisories(archive))

    ids = [a.osv_id for a in advisories]
    assert "GHSA-j8r2-6x86-q33q" not in ids and "PYSEC-2014-8" in ids  # 1.6 kB and 1.0 kB
    assert f"{archive}:GHSA-j8r2-6x86-q33q.json: larger than 1500 bytes; skipped" in map(
        str, errors
    )


def test_directory_reads_zips_inside(tmp_path):
    (tmp_path / "PyPI").mkdir()
    make_zip(tmp_path / "PyPI" / "all.zip")

    advisories, _ = split(osv.iter_advisories(tmp_path))

    assert sorted(a.osv_id for a in advisories) == GOOD_IDS


# --- Loading --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_load_directory_then_reload_is_idempotent():
    result = services.vulnerabilities_load(path=FIXTURES)

    assert (result.created, result.updated, result.unchanged) == (GOOD, 0, 0)
    assert result.errors == [f"{FIXTURES / 'malformed.json'}: missing 'id'"]
    assert list(Vulnerability.objects.values_list("osv_id", flat=True)) == GOOD_IDS
    requests = Vulnerability.objects.get(osv_id="GHSA-j8r2-6x86-q33q")
    assert requests.cvss_score == Decimal("6.1")
    assert requests.cve_ids == ["CVE-2023-32681"]
    assert requests.affected[0]["name"] == "requests"
    assert Vulnerability.objects.get(osv_id="PSM-2023-0286").status == "active"
    loaded_at = requests.loaded_at

    again = services.vulnerabilities_load(path=FIXTURES)

    assert (again.created, again.updated, again.unchanged, len(again.errors)) == (0, 0, GOOD, 1)
    assert Vulnerability.objects.count() == GOOD
    requests.refresh_from_db()
    assert requests.loaded_at == loaded_at

    forced = services.vulnerabilities_load(path=FIXTURES, force=True)
    assert (forced.created, forced.updated, forced.unchanged) == (0, GOOD, 0)
    requests.refresh_from_db()
    assert requests.loaded_at > loaded_at


@pytest.mark.django_db
def test_load_keeps_good_advisories_beside_bad_ones(tmp_path):
    shutil.copy(FIXTURES / "PYSEC-2014-8.json", tmp_path)
    (tmp_path / "not-json.json").write_text("<html>rate limited</html>")
    bad_vector = {"id": "X-1", "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:Q"}]}
    (tmp_path / "X-1.json").write_text(json.dumps(bad_vector))

    result = services.vulnerabilities_load(path=tmp_path)

    assert (result.created, result.updated, result.unchanged) == (1, 0, 0)
    assert len(result.errors) == 2
    assert result.errors[0] == (
        f"{tmp_path / 'X-1.json'}: bad CVSS_V3 vector 'CVSS:3.1/AV:Q': AV:Q is not a valid value"
    )
    assert result.errors[1].startswith(f"{tmp_path / 'not-json.json'}: not valid JSON: ")
    assert list(Vulnerability.objects.values_list("osv_id", flat=True)) == ["PYSEC-2014-8"]


@pytest.mark.django_db
def test_load_updates_only_newer_advisories(tmp_path):
    services.vulnerabilities_load(path=FIXTURES / "GHSA-j8r2-6x86-q33q.json")
    doc = fixture("GHSA-j8r2-6x86-q33q.json")
    doc["modified"] = "2025-01-01T00:00:00Z"
    doc["database_specific"]["status"] = "mitigated"
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(doc))
    doc["modified"] = "2020-01-01T00:00:00Z"
    doc["database_specific"]["status"] = "disputed"
    older = tmp_path / "older.json"
    older.write_text(json.dumps(doc))

    result = services.vulnerabilities_load(path=newer)
    assert (result.created, result.updated, result.unchanged) == (0, 1, 0)
    result = services.vulnerabilities_load(path=older)
    assert (result.created, result.updated, result.unchanged) == (0, 0, 1)

    stored = Vulnerability.objects.get()
    assert stored.status == "mitigated"
    assert stored.modified_at == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_load_duplicates_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "BATCH_SIZE", 2)
    docs = [{"id": f"X-{i}", "modified": "2024-01-01T00:00:00Z"} for i in range(5)]
    docs.append({"id": "X-1", "modified": "2024-06-01T00:00:00Z", "summary": "later"})
    docs.insert(1, {"id": "X-0", "modified": "2023-01-01T00:00:00Z", "summary": "earlier"})
    (tmp_path / "all.json").write_text(json.dumps(docs))

    result = services.vulnerabilities_load(path=tmp_path)

    assert (result.created, result.updated, result.unchanged, result.errors) == (5, 1, 1, [])
    assert Vulnerability.objects.get(osv_id="X-0").summary == ""
    assert Vulnerability.objects.get(osv_id="X-1").summary == "later"


@pytest.mark.django_db
def test_load_zip(tmp_path):
    archive = make_zip(tmp_path / "all.zip")

    result = services.vulnerabilities_load(path=archive)

    assert (result.created, len(result.errors)) == (GOOD, 1)
    assert str(result) == f"{GOOD} created, 0 updated, 0 unchanged, 1 error"


# --- Command and task -----------------------------------------------------------------------


@pytest.mark.django_db
def test_command_prints_the_result(tmp_path):
    shutil.copy(FIXTURES / "PYSEC-2014-8.json", tmp_path)
    out, err = StringIO(), StringIO()

    call_command("load_vulnerabilities", str(FIXTURES), str(tmp_path), stdout=out, stderr=err)

    assert out.getvalue().splitlines() == [
        f"{FIXTURES}: {GOOD} created, 0 updated, 0 unchanged, 1 error",
        f"{tmp_path}: 0 created, 0 updated, 1 unchanged, 0 errors",
    ]
    assert err.getvalue().strip() == f"{FIXTURES / 'malformed.json'}: missing 'id'"


@pytest.mark.django_db
def test_command_fails_when_nothing_could_be_read(tmp_path):
    (tmp_path / "bad.json").write_text("nope")
    err = StringIO()

    with pytest.raises(CommandError, match="No advisory could be read"):
        call_command("load_vulnerabilities", str(tmp_path), stdout=StringIO(), stderr=err)

    assert "not valid JSON" in err.getvalue()
    assert Vulnerability.objects.count() == 0


@pytest.mark.django_db
def test_task_loads_the_configured_directory(settings):
    settings.PSM_VULNERABILITY_DIR = ""
    assert tasks.load_vulnerabilities() is None

    settings.PSM_VULNERABILITY_DIR = str(FIXTURES)
    assert tasks.load_vulnerabilities() == f"{GOOD} created, 0 updated, 0 unchanged, 1 error"
    assert Vulnerability.objects.count() == GOOD


# --- Matching -------------------------------------------------------------------------------


def entry(*events: tuple[str, str], versions: tuple[str, ...] = (), kind="ECOSYSTEM") -> dict:
    return {
        "ecosystem": "conda",
        "name": "x",
        "ranges": [{"type": kind, "events": [{k: v} for k, v in events]}] if events else [],
        "versions": list(versions),
    }


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.1", False), ("1.0.2", True), ("1.1.1s", True), ("1.1.1t", False), ("2.0", False)]
    + [("3.0.0", True), ("3.0.7", True), ("3.0.8", False), ("3.1", False)],
)
def test_affects_multiple_introduced_fixed_pairs(version, expected):
    openssl = osv.parse_advisory(fixture("conda/PSM-2023-0286.json"), "x").affected[0]

    assert osv_matching.affects(openssl, version, compare) is expected


def test_affects_introduced_zero_and_unfixed():
    everything = entry(("introduced", "0"))
    assert osv_matching.affects(everything, "0.0.1", compare)
    assert osv_matching.affects(everything, "999", compare)
    assert osv_matching.affects(entry(("introduced", "0"), ("fixed", "2.0")), "1.9", compare)
    assert not osv_matching.affects(entry(("introduced", "0"), ("fixed", "2.0")), "2.0", compare)
    assert not osv_matching.affects(entry(("introduced", "1.5")), "1.4", compare)


def test_affects_last_affected_is_inclusive():
    rng = entry(("introduced", "0"), ("last_affected", "1.11.0"))
    assert osv_matching.affects(rng, "1.11.0", compare)
    assert osv_matching.affects(rng, "1.11", compare)  # conda: 1.11 == 1.11.0
    assert not osv_matching.affects(rng, "1.11.1", compare)


def test_affects_unsorted_events_and_limit():
    rng = entry(
        ("fixed", "3.2.5"), ("introduced", "3.0.0"), ("fixed", "1.0.2"), ("introduced", "0")
    )
    assert [osv_matching.affects(rng, v, compare) for v in ("0.9", "1.0.2", "3.1", "3.2.5")] == [
        True,
        False,
        True,
        False,
    ]
    limited = entry(("introduced", "1.0"), ("limit", "2.0"))
    assert osv_matching.affects(limited, "1.5", compare)
    assert not osv_matching.affects(limited, "2.1", compare)
    assert osv_matching.affects(entry(("introduced", "1.0"), ("limit", "*")), "9", compare)


def test_affects_explicit_versions():
    listed = entry(versions=("1.0", "2.0rc1"))
    assert osv_matching.affects(listed, "1.0", compare)
    assert osv_matching.affects(listed, "1.0.0", compare)
    assert osv_matching.affects(listed, "2.0rc1", compare)
    assert not osv_matching.affects(listed, "2.0", compare)
    # A version in the list or in a range is enough.
    both = entry(("introduced", "5.0"), versions=("1.0",))
    assert osv_matching.affects(both, "1.0", compare) and osv_matching.affects(both, "6", compare)
    assert not osv_matching.affects(both, "2.0", compare)


def test_affects_semver_and_other_range_types():
    assert osv_matching.affects(entry(("introduced", "1.0.0"), kind="SEMVER"), "1.2.3", compare)
    git = entry(("introduced", "0"), kind="GIT")
    assert not osv_matching.affects(git, "1.0", compare)
    assert not osv_matching.affects({"ecosystem": "conda", "name": "x"}, "1.0", compare)


def test_affects_skips_what_compare_cannot_read():
    # rattler cannot read "" nor "1..0": those list entries and ranges are skipped.
    odd = entry(("introduced", "0"), ("fixed", "1..0"), versions=("1..0", "2.0"))
    odd["ranges"].append({"type": "ECOSYSTEM", "events": [{"introduced": "3.0"}]})
    assert osv_matching.affects(odd, "2.0", compare)
    assert osv_matching.affects(odd, "3.1", compare)
    assert not osv_matching.affects(odd, "0.5", compare)  # the unreadable range does not count
    with pytest.raises(Exception):  # noqa: B017 - rattler's own error type
        osv_matching.affects(odd, "1..0", compare)


def test_malicious_entries_are_flagged_unless_withdrawn():
    doc = json.loads((FIXTURES / "pypi" / "MAL-2023-1578.json").read_text())
    advisory = osv.parse_advisory(doc, "mal.json")
    assert advisory.malicious and advisory.ecosystems == "|PyPI|"
    doc["withdrawn"] = "2023-06-01T00:00:00Z"  # a false positive OpenSSF took back
    assert not osv.parse_advisory(doc, "mal.json").malicious
    aliased = {"id": "GHSA-xxxx-yyyy-zzzz", "aliases": ["MAL-2024-1"], "affected": []}
    assert osv.parse_advisory(aliased, "x").malicious

"""Repository formats: the registry, and conda, Python and CRAN index parsing."""

from __future__ import annotations

import gzip
import io
import json
import tempfile

import pytest

from channels_app.formats import (
    FORMATS,
    FormatError,
    OptionsError,
    PackageRecord,
    Rejected,
    UnitExtras,
    get_format,
)
from channels_app.formats.conda import DEFAULT_SUBDIRS
from channels_app.formats.cran_index import parse_dcf
from channels_app.formats.pypi_pages import parse_project_list, project_name
from psm.http import UpstreamClient, UpstreamError
from tests.conftest import conda_record

conda = FORMATS["conda"]
pypi = FORMATS["pypi"]
cran = FORMATS["cran"]


def parse_repodata(body: bytes, url: str, subdir: str) -> list:
    """Check and parse a repodata document the way a sync does."""
    items = conda.parse_unit(io.BytesIO(body), url, subdir)
    return [item for item in items if not isinstance(item, UnitExtras)]


def records_of(fmt, client, source_url: str, options=None) -> list[PackageRecord]:
    """Every record of a source through the unit contract, as a sync reads it."""
    found = []
    for unit in sorted(fmt.list_units(client, source_url, options or {})):
        with tempfile.TemporaryFile() as index:
            fetched = fmt.fetch_unit(client, source_url, unit, index, {})
            if fetched.status != "changed":
                continue  # a channel need not have every platform
            found += [
                r for r in fmt.parse_unit(index, fetched.url, unit) if isinstance(r, PackageRecord)
            ]
    return found


@pytest.fixture
def client():
    client = UpstreamClient()
    yield client
    client.close()


# --- Registry ---------------------------------------------------------------------------------


def test_registry_holds_conda_pypi_and_cran():
    assert set(FORMATS) == {"conda", "pypi", "cran"}
    for kind, fmt in FORMATS.items():
        assert fmt.kind == kind
        assert get_format(kind) is fmt


def test_get_format_of_unknown_kind_raises_key_error_naming_known_kinds():
    with pytest.raises(KeyError) as caught:
        get_format("rpm")
    message = str(caught.value)
    assert "'rpm'" in message
    assert "conda, cran, pypi" in message


# --- conda ------------------------------------------------------------------------------------


def test_conda_options_may_be_empty():
    assert conda.clean_options(None) == {}
    assert conda.clean_options({}) == {}


def test_conda_unknown_option_is_rejected():
    with pytest.raises(OptionsError, match="unknown conda mirror options: colour"):
        conda.clean_options({"colour": "blue"})


def test_conda_unknown_platform_is_rejected():
    with pytest.raises(OptionsError, match="unknown platform.*amiga-68k"):
        conda.clean_options({"subdirs": ["linux-64", "amiga-68k"]})


@pytest.mark.parametrize("subdirs", ["linux-64", [1, 2], {"linux-64": True}])
def test_conda_subdirs_must_be_a_list_of_names(subdirs):
    with pytest.raises(OptionsError, match="list of platform names"):
        conda.clean_options({"subdirs": subdirs})


def test_conda_noarch_is_always_added_to_subdirs():
    assert conda.clean_options({"subdirs": ["win-64", "linux-64"]}) == {
        "subdirs": ["linux-64", "noarch", "win-64"]
    }
    assert conda.clean_options({"subdirs": ["noarch"]}) == {"subdirs": ["noarch"]}


def subdirs(client, source_url: str, options: dict) -> list[str]:
    return sorted(conda.list_units(client, source_url, options))


def test_conda_subdirs_come_from_channeldata(client, upstream):
    upstream.write("channeldata.json", {"subdirs": ["osx-arm64", "linux-64", "not-a-platform"]})
    assert subdirs(client, upstream.url, {}) == ["linux-64", "noarch", "osx-arm64"]


def test_conda_subdirs_option_wins_over_channeldata(client, upstream):
    upstream.write("channeldata.json", {"subdirs": ["osx-arm64"]})
    assert subdirs(client, upstream.url, {"subdirs": ["noarch", "win-64"]}) == [
        "noarch",
        "win-64",
    ]


def test_conda_subdirs_fall_back_to_defaults_without_channeldata(client, upstream):
    assert subdirs(client, upstream.url, {}) == sorted(DEFAULT_SUBDIRS)


@pytest.mark.parametrize(
    "channeldata",
    [b"{not json", b"[1, 2]", b'{"subdirs": 5}', b'{"subdirs": [["linux-64"]]}', b"{}"],
)
def test_conda_subdirs_fall_back_to_defaults_when_channeldata_is_broken(
    client, upstream, channeldata
):
    upstream.write("channeldata.json", channeldata)
    assert subdirs(client, upstream.url, {}) == sorted(DEFAULT_SUBDIRS)


def test_conda_records_are_every_record_of_every_subdir(client, conda_upstream):
    records = list(records_of(conda, client, conda_upstream.url + "/", {}))
    assert sorted((r.unit, r.name, r.version, r.filename) for r in records) == [
        ("linux-64", "beta", "2.0", "beta-2.0-0.conda"),
        ("noarch", "alpha", "1.0", "alpha-1.0-0.tar.bz2"),
        ("noarch", "alpha", "1.1", "alpha-1.1-0.conda"),
    ]
    beta = next(r for r in records if r.name == "beta")
    assert beta.sha256 == "0" * 64
    assert beta.size == 100
    assert beta.license == "MIT"
    assert beta.extra["build"] == "0"


def test_conda_subdir_missing_upstream_is_skipped(client, conda_upstream):
    conda_upstream.write("channeldata.json", {"subdirs": ["linux-64", "noarch", "win-64"]})
    records = list(records_of(conda, client, conda_upstream.url, {}))
    assert len(records) == 3
    assert {r.unit for r in records} == {"linux-64", "noarch"}


def test_conda_malformed_repodata_raises_format_error_naming_the_url(client, conda_upstream):
    conda_upstream.write("noarch/repodata.json", b'{"packages": ')
    url = f"{conda_upstream.url}/noarch/repodata.json"
    with pytest.raises(FormatError) as caught:
        parse_repodata(
            conda_upstream.root.joinpath("noarch/repodata.json").read_bytes(), url, "noarch"
        )
    assert caught.value.where == url
    assert url in str(caught.value)
    assert "not valid JSON" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "where", "reason"),
    [
        (b"[]", "URL", "repodata must be a JSON object"),
        (b'{"packages": ["x"]}', "URL [packages]", "must be an object"),
    ],
)
def test_conda_repodata_of_the_wrong_shape_names_the_key(body, where, reason):
    with pytest.raises(FormatError) as caught:
        list(parse_repodata(body, "URL", "noarch"))
    assert caught.value.where == where
    assert reason in caught.value.reason


def test_conda_repodata_records_keep_their_fields():
    body = json.dumps({"packages": {"a-1-0.tar.bz2": conda_record("a", "1")}}).encode()
    (record,) = parse_repodata(body, "URL", "noarch")
    assert record.document == json.dumps(conda_record("a", "1"), separators=(",", ":"))
    assert (record.name, record.version, record.filename, record.unit) == (
        "a",
        "1",
        "a-1-0.tar.bz2",
        "noarch",
    )
    assert record.md5 == "0" * 32


def test_conda_record_that_is_not_an_object_is_rejected_not_fatal():
    body = b'{"packages.conda": {"x-1-0.conda": 1}}'
    assert parse_repodata(body, "URL", "noarch") == [
        Rejected("x-1-0.conda", "record is not an object")
    ]


# --- pypi -------------------------------------------------------------------------------------


def test_pypi_parses_a_json_project_list():
    body = b'{"meta": {"api-version": "1.0"}, "projects": [{"name": "Django"}, {"name": "a.b"}]}'
    assert parse_project_list(body, "URL") == ["Django", "a.b"]


def test_pypi_parses_an_html_project_list():
    body = (
        b"<!DOCTYPE html><html><body>\n"
        b'<a href="/simple/django/">Django</a>\n'
        b'<a href="/simple/zope-interface/"> zope.interface </a>\n'
        b"<p>not a project</p>\n"
        b"</body></html>"
    )
    assert parse_project_list(body, "URL") == ["Django", "zope.interface"]


@pytest.mark.parametrize(
    "body", [b'{"projects": [{"nam": "x"}]', b'{"projects": 5}', b'{"meta": {}}', b"{nope"]
)
def test_pypi_malformed_json_project_list_raises_format_error(body):
    with pytest.raises(FormatError) as caught:
        parse_project_list(body, "http://127.0.0.1/simple/")
    assert caught.value.where == "http://127.0.0.1/simple/"
    assert "malformed JSON project list" in caught.value.reason


def test_pypi_non_utf8_html_raises_format_error():
    with pytest.raises(FormatError, match="not UTF-8"):
        parse_project_list(b"<a>caf\xe9</a>", "URL")


def test_pypi_units_are_the_normalized_project_names(client, upstream):
    upstream.write("simple/index.html", '<a href="/simple/foo/">Foo_Bar</a><a href="x">numpy</a>')
    assert sorted(pypi.list_units(client, upstream.url + "/simple", {})) == ["foo-bar", "numpy"]


def test_pypi_units_without_an_index_root_raise_format_error(client, upstream):
    with pytest.raises(FormatError, match="not found"):
        pypi.list_units(client, upstream.url + "/simple/", {})


@pytest.mark.parametrize(
    "url", ["https://pypi.org/simple/", "https://PyPI.org/simple", "https://pypi.org:443/simple/"]
)
def test_pypi_warns_to_run_yearly_for_pypi_org(url):
    (warning,) = pypi.source_warnings(url, {})
    assert "once yearly" in warning


@pytest.mark.parametrize(
    "url",
    ["https://evilpypi.org/simple/", "https://pypi.org.example.com/", "http://127.0.0.1/simple/"],
)
def test_pypi_does_not_warn_for_other_indexes(url):
    assert pypi.source_warnings(url, {}) == []


def test_pypi_normalizes_names_per_pep_503():
    assert project_name("Zope.Interface__x") == "zope-interface-x"


def test_only_pypi_warns_about_its_source():
    assert conda.source_warnings("https://pypi.org/simple/", {}) == []
    assert cran.source_warnings("https://pypi.org/simple/", {}) == []


# --- cran -------------------------------------------------------------------------------------

PACKAGES = """\
Package: abc
Version: 1.0
Depends: R (>= 2.10), nnet,
    quantreg
License: GPL (>= 2)
MD5sum: 0123456789abcdef0123456789abcdef

Package: xyz
Version: 0.2-1
"""


def test_cran_parse_dcf_joins_continuation_lines():
    stanzas = list(parse_dcf(PACKAGES, "PACKAGES"))
    assert stanzas == [
        {
            "Package": "abc",
            "Version": "1.0",
            "Depends": "R (>= 2.10), nnet, quantreg",
            "License": "GPL (>= 2)",
            "MD5sum": "0123456789abcdef0123456789abcdef",
        },
        {"Package": "xyz", "Version": "0.2-1"},
    ]


def test_cran_parse_dcf_malformed_line_names_the_line_number():
    text = "Package: abc\nVersion: 1.0\n\nPackage: xyz\nthis is not a field\n"
    with pytest.raises(FormatError) as caught:
        list(parse_dcf(text, "URL"))
    assert caught.value.where == "URL line 5"
    assert "Field: value" in caught.value.reason


def test_cran_parse_dcf_continuation_without_a_field_is_an_error():
    with pytest.raises(FormatError, match="URL line 2: continuation line"):
        list(parse_dcf("\n  dangling\n", "URL"))


def test_cran_records_prefers_packages_gz(client, upstream):
    upstream.write("src/contrib/PACKAGES.gz", gzip.compress(PACKAGES.encode()))
    upstream.write("src/contrib/PACKAGES", "Package: plain\nVersion: 9\n")
    records = list(records_of(cran, client, upstream.url, {}))
    assert [(r.name, r.version, r.filename) for r in records] == [
        ("abc", "1.0", "abc_1.0.tar.gz"),  # xyz has no MD5sum: rejected
    ]
    assert records[0].md5 == "0123456789abcdef0123456789abcdef"
    assert records[0].license == "GPL (>= 2)"
    assert records[0].unit == "src/contrib"


def test_cran_records_falls_back_to_plain_packages(client, upstream):
    upstream.write("src/contrib/PACKAGES", f"Package: plain\nVersion: 9.0\nMD5sum: {'0' * 32}\n")
    records = list(records_of(cran, client, upstream.url + "/", {}))
    assert [(r.name, r.version) for r in records] == [("plain", "9.0")]


def test_cran_records_without_any_packages_file_raises_format_error(client, upstream):
    with pytest.raises(FormatError) as caught:
        list(records_of(cran, client, upstream.url, {}))
    assert caught.value.where == f"{upstream.url}/src/contrib/PACKAGES"


def test_cran_records_with_a_bad_gzip_raises_format_error(client, upstream):
    upstream.write("src/contrib/PACKAGES.gz", b"this is not gzip")
    with pytest.raises(FormatError) as caught:
        list(records_of(cran, client, upstream.url, {}))
    assert caught.value.where == f"{upstream.url}/src/contrib/PACKAGES.gz"
    assert "gzip" in caught.value.reason


def test_cran_stanza_without_a_version_is_rejected_and_the_others_read(client, upstream):
    upstream.write("src/contrib/PACKAGES", "Package: abc\n\n" + PACKAGES)
    records = list(records_of(cran, client, upstream.url, {}))
    assert [r.name for r in records] == ["abc"]  # xyz has no MD5sum: rejected too


def test_cran_unknown_options_are_refused():
    assert cran.clean_options({}) == {}
    with pytest.raises(OptionsError, match="unknown R mirror options: subdirs"):
        cran.clean_options({"subdirs": ["x"]})


def test_format_fetch_errors_surface_as_upstream_errors(client, refused_url):
    with pytest.raises(UpstreamError):
        list(records_of(cran, client, refused_url, {}))

"""The CRAN format: PACKAGES stanzas as records and back, archive listings, URLs, R versions."""

from __future__ import annotations

import gzip
import io
import subprocess
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from channels_app.formats import FORMATS, FormatError, PackageRecord, Rejected, Unchanged
from channels_app.formats.cran import MISSING_RECHECK, archive_serial
from channels_app.formats.cran_filters import r_version
from channels_app.formats.cran_index import (
    archive_records,
    iter_stanzas,
    render_listing,
    render_stanza,
)
from psm.http import UpstreamClient
from tests.channels_app.formats import StoredDigests
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo, rscript

cran = FORMATS["cran"]
URL = "https://cran.example.org/src/contrib/PACKAGES.gz"
MD5 = "0123456789abcdef0123456789abcdef"
STANZA = f"""\
Package: abc
Version: 1.0-2
Depends: R (>= 2.10), nnet,
        quantreg
Imports: stats, Rcpp (>= 1.0.8)
LinkingTo: Rcpp
Suggests: testthat
License: GPL (>= 2)
MD5sum: {MD5}
NeedsCompilation: yes
"""


def _parse(text: str | bytes, **kwargs) -> list:
    body = text.encode() if isinstance(text, str) else text
    return list(cran.parse_unit(io.BytesIO(body), URL, "src/contrib", **kwargs))


class _Source:
    """An IndexSource over records, as publishing hands a channel's packages to a format."""

    def __init__(self, records: list[PackageRecord]) -> None:
        self.records = records

    def units(self) -> list[str]:
        return sorted({r.unit for r in self.records})

    def documents(self, unit: str, suffix: str = ""):
        rows = sorted((r.filename, r.document) for r in self.records if r.unit == unit)
        return iter(rows)

    def unit_extras(self, unit: str) -> dict:
        return {}

    def files(self, units):
        added = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        rows = [(r.unit, r.filename, r.size, added) for r in self.records if r.unit in units]
        return iter(sorted(rows))


def _render(records: list[PackageRecord], units=None) -> dict[str, bytes]:
    files: dict[str, bytes] = {}

    @contextmanager
    def emit(path: str, content_type: str):
        out = io.BytesIO()
        yield out
        files[path] = out.getvalue()

    cran.render_index(_Source(records), emit, units)
    return files


# --- R versions -------------------------------------------------------------------------------


def test_r_versions_compare_as_numbers():
    assert r_version("1.10") > r_version("1.9")
    assert r_version("0.2-1") == r_version("0.2.1")
    assert r_version("1.0") < r_version("1.0.0") < r_version("1.0-1")
    assert r_version("2") < r_version("10.0")
    for bad in ("1.0a", "", "1..2", "v1", "1.0 beta"):
        with pytest.raises(ValueError):
            r_version(bad)


# --- Parsing ----------------------------------------------------------------------------------


def test_a_stanza_is_a_record_kept_verbatim():
    (record,) = _parse(STANZA)
    assert (record.name, record.version, record.filename) == ("abc", "1.0-2", "abc_1.0-2.tar.gz")
    assert record.unit == "src/contrib"
    assert record.url == "https://cran.example.org/src/contrib/abc_1.0-2.tar.gz"
    assert record.md5 == MD5 and record.sha256 is None
    assert record.license == "GPL (>= 2)"
    assert record.depends == ("nnet", "quantreg", "Rcpp")  # not R, not base packages
    assert record.extra["Depends"] == "R (>= 2.10), nnet,\n        quantreg"
    assert render_stanza(record.extra).decode() == STANZA  # served back byte for byte


def test_parsing_what_was_rendered_gives_the_same_records():
    records = _parse(STANZA + "\n" + STANZA.replace("Package: abc", "Package: xyz"))
    files = _render(records)
    again = _parse(files["src/contrib/PACKAGES"])
    assert [(r.filename, r.document, r.md5) for r in again] == [
        (r.filename, r.document, r.md5) for r in records
    ]
    assert gzip.decompress(files["src/contrib/PACKAGES.gz"]) == files["src/contrib/PACKAGES"]
    assert _render(records)["src/contrib/PACKAGES.gz"] == files["src/contrib/PACKAGES.gz"]


def test_path_and_file_say_where_upstream_keeps_the_file_and_are_not_served():
    text = STANZA + "Path: older/R-4.1\nFile: abc_1.0-2_src.tar.gz\n"
    (record,) = _parse(text)
    assert record.url == "https://cran.example.org/src/contrib/older/R-4.1/abc_1.0-2_src.tar.gz"
    assert "Path" not in record.extra and "File" not in record.extra
    assert record.filename == "abc_1.0-2.tar.gz"


@pytest.mark.parametrize(
    ("stanza", "reason"),
    [
        ("Package: ../x\nVersion: 1.0\nMD5sum: " + MD5, "invalid package name"),
        ("Package: a/b\nVersion: 1.0\nMD5sum: " + MD5, "invalid package name"),
        ("Package: x\nVersion: 1.0\nMD5sum: " + MD5, "invalid package name"),  # one letter
        ("Package: abc\nVersion: 1\nMD5sum: " + MD5, "invalid version"),
        ("Package: abc\nVersion: 1.0/../2\nMD5sum: " + MD5, "invalid version"),
        ("Package: abc\nVersion: 1.0", "no MD5sum to verify the file with"),
        ("Package: abc\nVersion: 1.0\nMD5sum: 12", "malformed MD5sum"),
        ("Package: abc\nVersion: 1.0\nMD5sum: " + MD5 + "\nSHA256sum: zz", "malformed sha256"),
        ("Package: abc\nVersion: 1.0\nMD5sum: " + MD5 + "\nPath: ../..", "unsafe Path or File"),
        ("Package: abc\nVersion: 1.0\nMD5sum: " + MD5 + "\nFile: /etc/x", "unsafe Path or File"),
        ("Version: 1.0\nMD5sum: " + MD5, "stanza lacks Package or Version"),
        ("Package: abc\nVersion: 1.0\nno colon here", "malformed line (expected 'Field: value')"),
        ("Package: abc\nPackage: abd\nVersion: 1.0", "field Package given twice"),
    ],
)
def test_a_bad_stanza_is_rejected_and_the_next_one_read(stanza, reason):
    items = _parse(stanza + "\n\n" + STANZA)
    assert isinstance(items[0], Rejected) and items[0].reason == reason
    assert isinstance(items[1], PackageRecord) and items[1].name == "abc"


def test_a_stanza_that_is_not_utf8_is_rejected():
    items = _parse(b"Package: abc\nVersion: 1.0\nTitle: \xff\xfe\n\n" + STANZA.encode())
    assert [type(i) for i in items] == [Rejected, PackageRecord]
    assert items[0].reason == "stanza is not UTF-8"


def test_a_package_listed_twice_is_rejected_the_second_time():
    items = _parse(STANZA + "\n" + STANZA)
    assert [type(i) for i in items] == [PackageRecord, Rejected]
    assert items[1].reason == "listed twice"


def test_current_entries_come_back_unchanged():
    (record,) = _parse(STANZA)
    items = _parse(STANZA, stored=StoredDigests({record.filename: record.entry_digest}))
    assert items == [Unchanged("abc_1.0-2.tar.gz")]
    (moved,) = list(
        cran.parse_unit(
            io.BytesIO(STANZA.encode()),
            "https://elsewhere.example/src/contrib/PACKAGES",
            "src/contrib",
            StoredDigests({record.filename: record.entry_digest}),
        )
    )
    assert isinstance(moved, PackageRecord)  # the file moved: not the same entry


@pytest.mark.parametrize(
    "body",
    [b"<!DOCTYPE html><html>Not found</html>", b"just some text\n", b"Version: 1.0\n"],
)
def test_what_is_no_packages_file_fails_as_a_whole(body):
    with pytest.raises(FormatError):
        _parse(body)


def test_an_empty_packages_file_is_an_empty_repository():
    assert _parse(b"") == [] and _parse(b"\n\n") == []


def test_parse_dcf_style_whitespace_and_crlf():
    items = _parse(STANZA.replace("\n", "\r\n") + "\r\n\r\n")
    assert [r.name for r in items] == ["abc"]
    stanzas = list(iter_stanzas([b"A: 1\n", b"  \t\n", b"B: 2\n"], "x"))
    assert [s.fields for s in stanzas] == [{"A": "1"}, {"B": "2"}]


# --- Archive listings -------------------------------------------------------------------------

LISTING = b"""<html><body><h1>Index of /src/contrib/Archive/abc</h1><table>
<tr><th><a href="?C=N;O=D">Name</a></th></tr>
<tr><td><a href="/src/contrib/Archive/">Parent Directory</a></td></tr>
<tr><td><a href="abc_0.9.tar.gz">abc_0.9.tar.gz</a></td><td>2020-01-01</td></tr>
<tr><td><a href="abc_1.0-1.tar.gz">abc_1.0-1.tar.gz</a></td></tr>
<tr><td><a href="../xyz/xyz_1.0.tar.gz">evil</a></td></tr>
<tr><td><a href="xyz_1.0.tar.gz">foreign</a></td></tr>
<tr><td><a href="README.txt">README.txt</a></td></tr>
</table></body></html>"""


def test_archive_listing_yields_the_packages_tarballs_only():
    url = "https://cran.example.org/src/contrib/Archive/abc/"
    items = list(archive_records(LISTING, url, "src/contrib/Archive/abc", "abc"))
    records = [i for i in items if isinstance(i, PackageRecord)]
    assert [(r.filename, r.version, r.url) for r in records] == [
        ("abc_0.9.tar.gz", "0.9", url + "abc_0.9.tar.gz"),
        ("abc_1.0-1.tar.gz", "1.0-1", url + "abc_1.0-1.tar.gz"),
    ]
    assert all(r.md5 is None and r.sha256 is None for r in records)
    assert [i.filename for i in items if isinstance(i, Rejected)] == [
        "../xyz/xyz_1.0.tar.gz",
        "xyz_1.0.tar.gz",
    ]


def test_archive_listing_is_rendered_and_read_back():
    page = render_listing("src/contrib/Archive/abc", ["abc_1.0-1.tar.gz", "abc_0.9.tar.gz"])
    items = archive_records(page, "http://x/a/", "src/contrib/Archive/abc", "abc")
    assert [i.filename for i in items] == ["abc_0.9.tar.gz", "abc_1.0-1.tar.gz"]


def test_publishing_only_changed_units_leaves_packages_alone():
    records = _parse(STANZA)
    archived = list(archive_records(LISTING, "http://x/", "src/contrib/Archive/abc", "abc"))
    archived = [r for r in archived if isinstance(r, PackageRecord)]
    everything = _render(records + archived)
    assert "src/contrib/Archive/abc/index.html" in everything
    only_archive = _render(records + archived, {"src/contrib/Archive/abc"})
    meta = ["src/contrib/Meta/archive.rds"] if rscript() else []
    assert sorted(only_archive) == ["src/contrib/Archive/abc/index.html", *meta]
    assert sorted(_render(records + archived, {"src/contrib"})) == [
        "src/contrib/PACKAGES",
        "src/contrib/PACKAGES.gz",
        *(["src/contrib/PACKAGES.rds"] if rscript() else []),
    ]
    assert cran.unit_paths("src/contrib") == [
        "src/contrib/PACKAGES",
        "src/contrib/PACKAGES.gz",
        "src/contrib/PACKAGES.rds",
    ]
    # A changed archive folder replaces Meta/archive.rds, or drops it if none is left.
    assert cran.unit_paths("src/contrib/Archive/abc") == [
        "src/contrib/Archive/abc/index.html",
        "src/contrib/Meta/archive.rds",
    ]


@pytest.mark.skipif(rscript() is None, reason="R is not installed (Rscript not on PATH)")
def test_meta_archive_rds_lists_archived_files_as_file_info_rows(tmp_path):
    listings = {
        "abc": render_listing("src/contrib/Archive/abc", ["abc_1.10.tar.gz", "abc_1.9-1.tar.gz"]),
        "Zed.x": render_listing("src/contrib/Archive/Zed.x", ["Zed.x_0.1.tar.gz"]),
    }
    archived = [
        replace(record, size=1234) if record.version == "1.10" else record
        for package, page in listings.items()
        for record in archive_records(page, "http://x/", f"src/contrib/Archive/{package}", package)
    ]
    files = _render(_parse(STANZA) + archived)
    rds = tmp_path / "archive.rds"
    rds.write_bytes(files["src/contrib/Meta/archive.rds"])
    assert rds.read_bytes()[:2] == b"\x1f\x8b"  # gzip: readable through gzcon(url(...))
    script = """
    db <- readRDS(commandArgs(TRUE)[1])
    stopifnot(is.list(db), all(vapply(db, is.data.frame, TRUE)))
    cat(names(db), "\n")
    cat(names(db$abc), "\n")
    cat(rownames(db$abc), "\n")
    cat(db$abc$size, format(db$abc$mtime, tz = "UTC"), "\n")
    cat(class(db$abc$mode), class(db$abc$mtime)[1], db$abc$isdir, "\n")
    """
    result = subprocess.run(
        [rscript(), "--vanilla", "-e", script, str(rds)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Zed.x abc ",
        "size isdir mode mtime ctime atime uid gid uname grname ",
        "abc/abc_1.9-1.tar.gz abc/abc_1.10.tar.gz ",  # R version order: the newest last
        "NA 1234 2024-05-06 07:08:09 2024-05-06 07:08:09 ",
        "octmode POSIXct FALSE FALSE ",
    ]
    # Byte-stable: an unchanged archive keeps its ETag.
    assert _render(_parse(STANZA) + archived)["src/contrib/Meta/archive.rds"] == rds.read_bytes()


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "located"),
    [
        ("src/contrib/abc_1.0.tar.gz", ("src/contrib", "abc_1.0.tar.gz")),
        ("cran/src/contrib/abc_1.0.tar.gz", ("src/contrib", "abc_1.0.tar.gz")),
        (
            "src/contrib/Archive/abc/abc_0.9.tar.gz",
            ("src/contrib/Archive/abc", "abc_0.9.tar.gz"),
        ),
        ("src/contrib/Archive/abc/xyz_0.9.tar.gz", None),
        ("src/contrib/Archive/../abc_0.9.tar.gz", None),
        ("src/contrib/../abc_1.0.tar.gz", None),
        ("src/contrib/PACKAGES", None),
        ("bin/windows/contrib/4.2/abc_1.0.zip", None),
    ],
)
def test_locate_package_files(path, located):
    assert cran.locate(path) == located


def test_index_requests_for_the_cran_base_url_and_archive_folders():
    assert cran.index_request("src/contrib/PACKAGES", None) is None
    assert cran.index_request("cran/src/contrib/PACKAGES", None).path == "src/contrib/PACKAGES"
    folder = cran.index_request("src/contrib/Archive/abc/", None)
    assert folder.path == "src/contrib/Archive/abc/index.html"
    assert cran.index_request("cran/src/contrib/Archive/abc/", None).path == folder.path
    assert cran.index_request("src/contrib/Archive/abc", None).redirect == (
        "src/contrib/Archive/abc/"
    )
    assert cran.index_request("src/contrib/Archive/../", None) is None


# --- Fetching ---------------------------------------------------------------------------------


@pytest.fixture
def client():
    client = UpstreamClient()
    yield client
    client.close()


def test_fetch_is_conditional_on_the_stored_validators(tmp_path, client):
    root = build_repo(tmp_path / "repo", [RPackage("abc", "1.0")])
    with CranServer(root) as server, open(tmp_path / "index", "w+b") as dest:
        fetched = cran.fetch_unit(client, server.url, "src/contrib", dest, {})
        assert fetched.status == "changed" and fetched.url.endswith("/PACKAGES.gz")
        assert dest.read().startswith(b"Package: abc\n")  # decompressed
        again = cran.fetch_unit(client, server.url, "src/contrib", dest, fetched.validators)
        assert again.status == "unchanged"


def test_a_decompression_bomb_is_refused(tmp_path, client):
    root = build_repo(tmp_path / "repo", [RPackage("abc", "1.0")], plain=False)
    (root / "src/contrib/PACKAGES.gz").write_bytes(gzip.compress(b"\n" * 100_000))
    client.max_bytes = 50_000
    with CranServer(root) as server, open(tmp_path / "index", "w+b") as dest:
        with pytest.raises(FormatError, match="50000 byte limit"):
            cran.fetch_unit(client, server.url, "src/contrib", dest, {})


def test_archive_units_are_the_mirrored_packages_folders(tmp_path, client):
    packages = [RPackage("abc", "1.0"), RPackage("xyz", "1.0"), RPackage("qrs", "1.0")]
    root = build_repo(tmp_path / "repo", packages)
    with CranServer(root) as server:
        assert list(cran.list_units(client, server.url, {})) == ["src/contrib"]
        options = {"archive": True, "exclude": ["qrs"]}
        assert list(cran.list_units(client, server.url, options)) == [
            "src/contrib",
            "src/contrib/Archive/abc",
            "src/contrib/Archive/xyz",
        ]
        options = {"archive": True, "packages": ["xyz (>= 1)", "nothere"]}
        assert list(cran.list_units(client, server.url, options)) == [
            "src/contrib",
            "src/contrib/Archive/xyz",
        ]


def test_an_archive_units_serial_follows_its_packages_entry(tmp_path, client):
    root = build_repo(tmp_path / "repo", [RPackage("abc", "1.0"), RPackage("xyz", "1.0")])
    with CranServer(root) as server:
        before = cran.list_units(client, server.url, {"archive": True})
        build_repo(root, [RPackage("abc", "1.1"), RPackage("xyz", "1.0")])
        after = cran.list_units(client, server.url, {"archive": True})
    # PACKAGES has its version (validators) as serial: read again only when it changed.
    assert None not in (before["src/contrib"], after["src/contrib"])
    assert before["src/contrib"] != after["src/contrib"]
    assert before["src/contrib/Archive/xyz"] == after["src/contrib/Archive/xyz"]
    assert before["src/contrib/Archive/abc"] != after["src/contrib/Archive/abc"]


def test_a_404_archive_folder_is_remembered_until_a_new_period():
    monday = datetime(2024, 5, 6, tzinfo=UTC)
    assert archive_serial("abc", [2, 1], monday) == archive_serial("abc", [1, 2], monday)
    assert archive_serial("abc", [1], monday) != archive_serial("abc", [3], monday)
    assert archive_serial("abc", [1], monday) != archive_serial(
        "abc", [1], monday + MISSING_RECHECK
    )


def test_only_a_missing_archive_folder_keeps_its_serial(tmp_path, client):
    root = build_repo(
        tmp_path / "repo", [RPackage("abc", "1.1")], archived=[RPackage("abc", "1.0")]
    )
    with CranServer(root) as server:
        with io.BytesIO() as dest:
            found = cran.fetch_unit(client, server.url, "src/contrib/Archive/abc", dest, {})
            again = cran.fetch_unit(
                client, server.url, "src/contrib/Archive/abc", dest, found.validators
            )
            missing = cran.fetch_unit(client, server.url, "src/contrib/Archive/xyz", dest, {})
            index = cran.fetch_unit(client, server.url, "src/contrib", dest, {})
    assert (found.status, found.serial_kept) == ("changed", False)
    assert (again.status, again.serial_kept) == ("unchanged", False)
    assert (missing.status, missing.serial_kept) == ("missing", True)  # the 404 is remembered
    assert index.serial_kept  # no serial is listed for PACKAGES: asked every run anyway

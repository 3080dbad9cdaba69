"""PACKAGES as R reads it: seeded random PACKAGES files, hostile ones too, read by PSM and by an
oracle of R's `read.dcf`; PSM's view of every package it takes must be R's, and what PSM
publishes R must read as it reads upstream.

The oracle (`read_dcf`) transcribes what `available.packages` runs on a downloaded PACKAGES or
PACKAGES.gz: `read.dcf(file)` (no `fields`, no `keep.white`), that is R's src/main/dcf.c
(`do_readDCF`, as in R's 2025 sources) over a connection (`Rconn_fgetc`, src/main/connections.c):

- a CR and a CRLF are each read as LF (`Rconn_fgetc`: "map CR or CRLF to LF"; a CR followed
  by a CR gives two LFs), and a line ends at its first NUL byte (the C string `strlen` sees);
- a line of only spaces and tabs (`^[ \\t]*$`) is blank: it ends a record, and more blank lines
  are skipped; no other whitespace (form feed, vertical tab, no-break space) is blank;
- a line beginning with `#` is skipped (R-devel of 2025; R 4.2, checked against the installed R
  below, stops at it, and R 3.x reads it as a field: doubtful, below);
- a line beginning with a space or tab continues the current field; one that begins a record
  stops `read.dcf` (nothing of the file is read); its value loses the leading and trailing
  spaces and tabs and is joined with a newline (none when the value so far is empty);
- a continuation line that is only whitespace and a `.` (`^[ \\f\\n\\r\\t\\v]+\\.[...]*$`) is
  an escaped blank line: it adds a newline before the next continuation line's text (the count
  lives on into the following fields of the record), nothing when none follows;
- any other line is `name: value`, the name everything before the first colon (spaces, `-`, `#`
  after the first character allowed), the value without the spaces and tabs after the colon
  and at the end; a line without a colon stops `read.dcf`;
- a field given twice keeps its last value.

Which record `install.packages` takes among several of one package (`tools:::.remove_stale_dups`,
the `duplicates` filter of `available.packages`): the highest version, the first listed among
equal versions (`package_version` compares `1.0-1` and `1.0.1` equal).

Some records R versions or locales read differently, and PSM must refuse them ("doubtful"): a
comment line in (or just before) the record (R 3.x reads it as a field); a NUL byte or bytes
not UTF-8 in a line (R cuts the line; R-devel writes `<xx>` for bad bytes, other R versions keep
them); in a field PSM reads (name, version, checksums, location, license, dependencies)
whitespace other than spaces and tabs (R's `[[:space:]]` is locale-dependent where R parses
dependencies) or an escaped blank line (R 3.x keeps a trailing newline for it, recent R drops
it), or a continuation line of a one-word field (R 3.x starts its value with a newline where
the first line is empty). A field given twice PSM refuses
too (R keeps the last: the record is refused rather than read another way). A record that stops
`read.dcf` is refused; PSM still reads the file's other records, each as R reads it.

Properties, for random files (line endings, spacing, continuation lines, odd field names, repeated
packages and versions, damaged lines):

- PSM takes exactly R's records that are not doubtful, installable (name, version, checksum)
  and not a version an earlier record already lists as R compares versions, with R's name,
  version, MD5sum, license and dependencies; each one's stanza as PSM serves it, R reads with
  every field upstream's (less `Path` and `File`, which PSM serves at the standard path);
- PSM's published PACKAGES (and PACKAGES.gz, and after withdrawing some files) R reads as the
  records PSM took, and `install.packages` picks for each package the record it picks upstream.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

from channels_app.formats import FORMATS, FormatError, PackageRecord, cran_index
from channels_app.formats.cran_filters import dependencies, r_version
from channels_app.formats.cran_index import (
    fold,
    is_package_name,
    is_package_version,
    iter_stanzas,
    render_stanza,
    withdraw_packages,
)
from tests.channels_app import in_memory

cran = FORMATS["cran"]
URL = "https://cran.example.org/src/contrib/PACKAGES"
CASES = 400
LOCATION = ("Path", "File")
SHA256 = ("SHA256sum", "sha256sum", "SHA256", "sha256")
#: The fields PSM reads itself; of these, those holding one word.
ONE_WORD = ("Package", "Version", "MD5sum", *SHA256, *LOCATION)
READ = (*ONE_WORD, "License", "Depends", "Imports", "LinkingTo")

# --- The oracle: R's read.dcf -------------------------------------------------------------------

_CR = re.compile(rb"\r\n|\r\r|\r")
_BLANK = re.compile(rb"[ \t]*")
_CONTINUATION = re.compile(rb"[ \t]+")
_FIELD = re.compile(rb"[^:]+:[ \t]*")
_ESCAPED_BLANK = re.compile(rb"[ \f\n\r\t\v]+\.[ \f\n\r\t\v]*")
_ODD_SPACE = re.compile(r"[^\S \t\n]")  # whitespace R reads as text, Python (and locales) not


def connection_lines(data: bytes) -> list[tuple[bytes, bool]]:
    """The lines `Rconn_getline2` gives, each cut at its first NUL (and whether it had one)."""
    text = _CR.sub(lambda m: b"\n\n" if m[0] == b"\r\r" else b"\n", data)
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [(line.split(b"\0", 1)[0], b"\0" in line) for line in lines]


@dataclass
class RRecord:
    fields: dict[str, str] = field(default_factory=dict)
    #: Each field read as an R whose escaped blank lines do not outlive their field would.
    alone: dict[str, str] = field(default_factory=dict)
    error: str = ""  # read.dcf stops: R reads nothing of the file
    doubtful: str = ""  # R versions or locales read the record differently
    repeated: str = ""  # a field given twice: R keeps the last value

    def doubt(self, why: str) -> None:
        self.doubtful = self.doubtful or why

    @property
    def clean(self) -> bool:
        return not (self.error or self.doubtful or self.repeated)

    def listing(self) -> tuple[str, tuple[int, ...]] | None:
        """The package and version (as R compares them) any R may read here."""
        name, version = self.alone.get("Package", ""), self.alone.get("Version", "")
        if is_package_name(name) and is_package_version(version):
            return name, r_version(version)
        return None


def _joined(value: str, escaped: int, text: str) -> str:
    """dcf.c: a newline unless the value is empty, one per escaped blank line, the text."""
    return value + ("\n" if value else "") + "\n" * escaped + text


def _decode(raw: bytes, record: RRecord) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        record.doubt("bytes not UTF-8")
        return raw.decode("utf-8", "replace")


def read_dcf(data: bytes) -> list[RRecord]:
    """R's `read.dcf(file)` of these bytes, record by record (see the module docstring)."""
    records: list[RRecord] = []
    record: RRecord | None = None
    name: str | None = None
    escaped = escaped_alone = 0
    before = ""  # a doubtful line before the record's first (PSM reads it as the record's)
    for line, had_nul in connection_lines(data):
        if _BLANK.fullmatch(line):
            if record is not None:
                records.append(_finished(record))
            record, name, before = None, None, ""
            escaped = escaped_alone = 0
            continue
        if line[:1] == b"#":
            if record is None:
                before = "comment line"
            else:
                record.doubt("comment line")
            continue
        if record is None:
            record = RRecord()
            if before:
                record.doubt(before)
        if had_nul:
            record.doubt("NUL byte")
        if _CONTINUATION.match(line):
            if name is None:
                record.error = record.error or "continuation line begins the record"
                continue
            if _ESCAPED_BLANK.fullmatch(line):
                escaped, escaped_alone = escaped + 1, escaped_alone + 1
                if name in READ:
                    record.doubt(f"escaped blank line in {name}")
                continue
            text = _decode(line.strip(b" \t"), record)
            record.fields[name] = _joined(record.fields[name], escaped, text)
            record.alone[name] = _joined(record.alone[name], escaped_alone, text)
            escaped = escaped_alone = 0
            if name in ONE_WORD:
                record.doubt(f"{name} continued")
            continue
        match = _FIELD.match(line)
        if match is None:
            record.error = record.error or "line without a field name"
            continue
        name = _decode(line[: line.index(b":")], record)
        if name in record.fields:
            record.repeated = name
        value = _decode(line[match.end() :].rstrip(b" \t"), record)
        record.fields[name] = record.alone[name] = value
        escaped_alone = 0
    if record is not None:
        records.append(_finished(record))
    return records


def _finished(record: RRecord) -> RRecord:
    for name in READ:
        if _ODD_SPACE.search(record.fields.get(name, "")):
            record.doubt(f"odd whitespace in {name}")
    return record


# --- What PSM must take -------------------------------------------------------------------------

_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def installable(fields: dict[str, str]) -> bool:
    """What PSM takes of a record R reads: a valid name and version, a checksum to verify the
    file with (well formed), and a location within the repository."""
    md5 = fields.get("MD5sum", "")
    sha256 = next((fields[k] for k in SHA256 if k in fields), "")
    path = fields.get("Path", "").strip("/")
    location = [*(path.split("/") if path else []), fields.get("File", "") or "x"]
    return (
        is_package_name(fields.get("Package"))
        and is_package_version(fields.get("Version"))
        and (bool(md5) or bool(sha256))
        and (not md5 or _MD5.fullmatch(md5) is not None)
        and (not sha256 or _SHA256.fullmatch(sha256) is not None)
        and all(_SEGMENT.fullmatch(p) and ".." not in p for p in location)
    )


def taken(records: list[RRecord]) -> list[RRecord]:
    """R's records PSM must take: clean, installable, and not a version listed before."""
    listed: set[tuple[str, tuple[int, ...]]] = set()
    kept = []
    for record in records:
        listing = record.listing()
        if record.clean and installable(record.fields) and listing not in listed:
            kept.append(record)
        if listing is not None:
            listed.add(listing)
    return kept


def served(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in LOCATION}


def r_picks(records: list[RRecord]) -> dict[str, RRecord]:
    """The record `install.packages` takes per package: the highest version, the first of equal
    ones (`tools:::.remove_stale_dups`); of the records with a valid name and version."""
    picks: dict[str, RRecord] = {}
    for record in records:
        name, version = record.fields.get("Package"), record.fields.get("Version")
        if not is_package_name(name) or not is_package_version(version):
            continue
        if name not in picks or r_version(version) > r_version(picks[name].fields["Version"]):
            picks[name] = record
    return picks


# --- Random PACKAGES files ----------------------------------------------------------------------

NAMES = ["abc", "Rcpp", "data.table", "R6", "x", "1ab", "a_b", "zz9"]
VERSIONS = ["1.0", "1.0-1", "1.0.1", "01.0.1", "2.0", "0.9-10", "1", "1.0a", "1.0.0"]
WORDS = ["GPL", "(>=", "2)", "MIT", "+", "file", "LICENSE", "|", "a", "b.c", "x-y", "é"]
DEPENDENCIES = ["R (>= 3.5.0)", "foo", "bar (>= 1.0)", "baz.qux", "Rcpp (>= 1.0.8)", "methods"]
ODD = ["\x0c", "\x0b", "\xa0", "\u3000", "\x1c", "\x85", "\u2028"]
LICENSES = ["GPL (>= 2)", "MIT + file LICENSE", "GPL-2 | GPL-3", "Apache License 2.0"]
ODD_NAMES = ["Foo Bar", "-Weird", "X#Y", "Package ", "package", "\x0cFoo", "Ünï", "Version "]


def _hex(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(digits))


def _value(rng: random.Random, key: str) -> str:
    if key == "Package":
        return rng.choice(NAMES[:4] if rng.random() < 0.8 else NAMES)
    if key == "Version":
        return rng.choice(VERSIONS[:6] if rng.random() < 0.8 else VERSIONS)
    if key == "MD5sum":
        return _hex(rng, rng.choice([32] * 9 + [31]))
    if key == "SHA256sum":
        return _hex(rng, 64)
    if key == "Path":
        return rng.choice(["older", "older/R-4.1", "/x/"])
    if key == "License":
        return rng.choice(LICENSES)
    if key in ("Depends", "Imports", "LinkingTo", "Suggests"):
        return ", ".join(rng.sample(DEPENDENCIES, rng.randint(1, 4)))
    if key == "NeedsCompilation":
        return rng.choice(["yes", "no"])
    if key == "Description" and rng.random() < 0.05:
        return "long " * rng.randint(2000, 4000)  # a line of 10-20 KB
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6)))


def _spaced(rng: random.Random, value: str, key: str, hostile: bool) -> list[str]:
    """The value as a field's lines: spacing after the colon, continuation lines, trailing
    blanks, escaped blank lines, odd whitespace (hostile files)."""
    words = value.split(" ")
    cuts = sorted(rng.sample(range(1, len(words)), min(len(words) - 1, rng.randint(0, 2))))
    if len(words) > 1 and rng.random() < 0.6:
        cuts = []
    parts = [" ".join(words[a:b]) for a, b in zip([0, *cuts], [*cuts, len(words)], strict=True)]
    if rng.random() < 0.05 and (hostile or key not in ONE_WORD):
        parts.insert(0, "")  # the value begins on the next line
    indent = rng.choice([" ", "\t", "        ", " \t"])
    lines = [key + ":" + rng.choice([" ", " ", "", "\t", "   "]) + parts[0]]
    lines += [indent + part for part in parts[1:]]
    if rng.random() < (0.1 if key not in READ else 0.02 if hostile else 0.0):
        at = rng.randint(1, len(lines))
        lines.insert(at, rng.choice([" .", "\t.", "  . ", " .\x0c"]))
    if rng.random() < (0.05 if key not in READ or hostile else 0.0):
        # A continuation line of only a form feed (or such): not blank to R.
        lines.insert(rng.randint(1, len(lines)), indent + rng.choice(ODD))
    if rng.random() < 0.15:
        at = rng.randrange(len(lines))
        lines[at] += rng.choice([" ", "\t", " \t "])
    if rng.random() < (0.03 if hostile or key not in READ else 0.0):
        at = rng.randrange(len(lines))
        where = rng.choice([0, len(lines[at])]) if hostile else len(lines[at])
        if at and where == 0:
            where = len(indent)
        lines[at] = lines[at][:where] + rng.choice(ODD) + lines[at][where:]
    return lines


def _record(rng: random.Random, hostile: bool) -> list[bytes]:
    keys = ["Package", "Version"]
    keys += [k for k in ("Depends", "Imports", "LinkingTo", "Suggests") if rng.random() < 0.5]
    keys += ["License", "MD5sum", "NeedsCompilation"]
    keys += [k for k in ("Title", "Description") if rng.random() < 0.3]
    if rng.random() < 0.1:
        keys.append("SHA256sum")
    if rng.random() < 0.1:
        keys.append("Path")
    if rng.random() < 0.15:
        keys.append(rng.choice(ODD_NAMES))
    if hostile and rng.random() < 0.1:
        keys.remove(rng.choice(["Package", "Version", "MD5sum"]))
    if hostile and rng.random() < 0.05:
        keys.append(rng.choice(keys))  # a field given twice
    if rng.random() < 0.7:
        rng.shuffle(keys)
    lines = []
    for key in keys:
        lines += _spaced(rng, _value(rng, key), key, hostile)
    raw = [line.encode() for line in lines]
    if hostile:
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            raw.insert(rng.randint(0, len(raw)), _damage(rng))
    return raw


def _damage(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b"# a comment",
            b"#Package: evil",
            b"no colon here",
            b" stray continuation",
            b"Title: a\0b",
            b"Title: \xff\xfe",
            b"\0",
            b" \0",
            b" \x0c",
            b"\x0c",
            b"\x0b ",
            b" \xc2\xa0",
            b"\xe3\x80\x80",
            b"Depends: foo\rImports: evil",
            b"Imports: a,\r b",
            b"Title: x\r\r\nMD5sum: 0123456789abcdef0123456789abcdef",
            b":no name",
            b"Foo:: bar",
            b"\xef\xbb\xbfPackage: bom",
        ]
    )


def packages_file(rng: random.Random, hostile: bool) -> bytes:
    """A PACKAGES file of random records: random line endings and blank lines between them."""
    endings = [b"\n"] * 8 + [b"\r\n", b"\r"] if rng.random() < 0.5 else [b"\n"]
    blanks = [b"", b"", b" ", b"\t", b" \t "] + ([b"\0", b"  \0 x"] if hostile else [])
    out = [rng.choice([b"", b"\n", b" \n"])]
    for index in range(rng.randint(1, 6)):
        if index:
            out += [rng.choice(blanks) + rng.choice(endings) for _ in range(rng.randint(1, 2))]
        out += [line + rng.choice(endings) for line in _record(rng, hostile)]
    data = b"".join(out)
    if rng.random() < 0.3:
        data = data.rstrip(b"\r\n")  # no newline at the end
    return data


# --- PSM ----------------------------------------------------------------------------------------


def _parse(data: bytes) -> list:
    return list(cran.parse_unit(io.BytesIO(data), URL, "src/contrib"))


class _Source:
    def __init__(self, records: list[PackageRecord]) -> None:
        self.records = records

    def units(self) -> list[str]:
        return ["src/contrib"]

    def documents(self, unit: str, suffix: str = ""):
        return iter(sorted((r.filename, r.document) for r in self.records))


def _publish(records: list[PackageRecord]) -> dict[str, bytes]:
    emit, files = in_memory()
    cran.render_index(_Source(records), emit, {"src/contrib"})
    return files


def _unordered(records) -> list[list[tuple[str, str]]]:
    return sorted(sorted(fields.items()) for fields in records)


def _check_taken(data: bytes) -> int:
    """PSM takes of `data` what R reads, as R reads it; the number of records taken."""
    expected = taken(read_dcf(data))
    try:
        items = _parse(data)
    except FormatError:
        assert expected == [], data  # a file refused whole: R would install nothing PSM takes
        return 0
    records = [item for item in items if isinstance(item, PackageRecord)]
    assert [(r.name, r.version) for r in records] == [
        (e.fields["Package"], e.fields["Version"]) for e in expected
    ], data
    for record, r in zip(records, expected, strict=True):
        fields = r.fields
        assert record.md5 == (fields.get("MD5sum", "").lower() or None), data
        assert record.license == (fold(fields.get("License", "")) or None), data
        assert record.depends == tuple(dependencies(fields)), data
        assert record.url.endswith(
            "/".join([*filter(None, fields.get("Path", "").strip("/").split("/")), record.filename])
        ), data
        (again,) = read_dcf(render_stanza(record.extra))
        assert again.clean and again.fields == served(fields), data
    return len(records)


def test_psm_takes_the_records_r_reads_with_the_fields_r_reads():
    rng = random.Random(20240614)
    taken_count = sum(_check_taken(packages_file(rng, hostile=False)) for _ in range(CASES))
    assert taken_count > CASES  # the cases are not all refused


def test_psm_takes_nothing_r_reads_otherwise_from_damaged_packages_files():
    rng = random.Random(77)
    taken_count = sum(_check_taken(packages_file(rng, hostile=True)) for _ in range(CASES))
    assert taken_count > CASES // 2


def test_a_packages_file_read_in_pieces_is_read_as_read_whole():
    rng = random.Random(404)
    for _ in range(CASES // 2):
        data = packages_file(rng, hostile=True)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randint(1, 40))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

        def read(chunks):
            return [(s.fields, s.line, s.problem) for s in iter_stanzas(chunks, URL)]

        assert read(pieces) == read([data]) == read(io.BytesIO(data)), data


def test_r_reads_psms_published_packages_as_the_records_psm_took(monkeypatch):
    # PACKAGES.rds (rendered by R where it is installed, tested with R elsewhere) left out:
    # 100 publishes would start R 100 times.
    monkeypatch.setattr(cran_index.shutil, "which", lambda name: None)
    rng = random.Random(5150)
    for _ in range(CASES // 2):
        upstream = packages_file(rng, hostile=False)
        records = [item for item in _parse(upstream) if isinstance(item, PackageRecord)]
        files = _publish(records)
        published = files["src/contrib/PACKAGES"]
        assert gzip.decompress(files["src/contrib/PACKAGES.gz"]) == published
        read = read_dcf(published)
        assert all(r.clean for r in read), published
        upstream_read = read_dcf(upstream)
        took = [served(r.fields) for r in taken(upstream_read)]
        assert _unordered(r.fields for r in read) == _unordered(took), upstream
        # install.packages picks of every package the record it picks upstream (unless PSM
        # refused that one).
        picks = r_picks(read)
        for name, pick in r_picks(upstream_read).items():
            if pick.clean and installable(pick.fields):
                assert picks[name].fields == served(pick.fields), upstream
        # Withdrawing files leaves the other stanzas as R read them.
        gone = {r.filename for r in records if rng.random() < 0.3}
        emit, out = in_memory()
        if withdraw_packages(io.BytesIO(published), gone, emit):
            left = [r.fields for r in read_dcf(out["src/contrib/PACKAGES"])]
            kept = [
                r.fields
                for r in read
                if f"{r.fields['Package']}_{r.fields['Version']}.tar.gz" not in gone
            ]
            assert left == kept, published


#: Reads each file given, printing its records' fields in hex ("ERROR" where read.dcf stops).
R_READER = r"""
hex <- function(s) paste(as.character(charToRaw(s)), collapse = "")
for (f in commandArgs(trailingOnly = TRUE)) {
  cat("FILE\n")
  x <- tryCatch(read.dcf(f), error = function(e) NULL, warning = function(w) NULL)
  if (is.null(x)) { cat("ERROR\n"); next }
  for (r in seq_len(nrow(x))) {
    cat("RECORD\n")
    for (c in colnames(x)) if (!is.na(x[r, c])) cat("F", hex(c), hex(x[r, c]), "\n")
  }
}
"""


def _read_by_r(paths: list) -> list:
    """The installed R's `read.dcf` of each file: its records' fields, or None where it stops."""
    out = subprocess.run(
        ["Rscript", "-e", R_READER, *map(str, paths)], capture_output=True, check=True, timeout=120
    ).stdout.decode()
    files: list = []
    for line in out.splitlines():
        if line == "FILE":
            files.append([])
        elif line == "ERROR":
            files[-1] = None
        elif line == "RECORD":
            files[-1].append({})
        elif line.startswith("F "):
            _, name, value = line.split(" ")[:3]  # a value may be empty
            # (Bytes not UTF-8 make the oracle's record doubtful: not compared.)
            text = bytes.fromhex(value).decode("utf-8", "replace")
            files[-1][-1][bytes.fromhex(name).decode("utf-8", "replace")] = text
    return files


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_the_oracle_reads_as_the_installed_r_does(tmp_path):
    """The oracle against R itself: the same records and fields wherever it finds nothing
    doubtful, and R stopping where it stops (R 4.x also stops at a comment line, where PSM
    refuses the one stanza)."""
    rng = random.Random(1996)
    paths = []
    for case in range(CASES // 2):
        paths.append(tmp_path / f"{case}.dcf")
        paths[-1].write_bytes(packages_file(rng, hostile=case % 2 == 1))
    compared = 0
    for path, by_r in zip(paths, _read_by_r(paths), strict=True):
        oracle = read_dcf(path.read_bytes())
        if by_r is None:
            comment = any(line[:1] == b"#" for line, _ in connection_lines(path.read_bytes()))
            assert comment or any(r.error for r in oracle), path.read_bytes()
            continue
        assert not any(r.error for r in oracle) and len(by_r) == len(oracle), path.read_bytes()
        for record, fields in zip(oracle, by_r, strict=True):
            if not record.doubtful:
                assert record.fields == fields, path.read_bytes()
                compared += 1
    assert compared > CASES // 2

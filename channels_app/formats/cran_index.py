"""CRAN's index, pure: package names and versions, PACKAGES stanzas (DCF) parsed into checked
records, Archive folder listings read, and PACKAGES, PACKAGES.gz, PACKAGES.rds and
Meta/archive.rds rendered as PSM serves them. `cran` is the format that fetches and uses it.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from html.parser import HTMLParser
from itertools import groupby
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import orjson

from . import cran_filters
from .base import (
    Emit,
    FormatError,
    PackageRecord,
    Rejected,
    content_type,
    entry_digest,
)
from .cran_filters import r_version  # noqa: F401 - R version order, defined once there

logger = logging.getLogger(__name__)
CONTRIB = "src/contrib"
ARCHIVE = "src/contrib/Archive/"
#: What R tools (`remotes::install_version`, `tools:::CRAN_archive_db`) read to find archived
#: versions without listing folders.
META_ARCHIVE = "src/contrib/Meta/archive.rds"
DCF_TYPE = "text/plain; charset=utf-8"
GZIP_TYPE = content_type("PACKAGES.gz")
RDS_TYPE = "application/octet-stream"
#: Fields that say where upstream keeps a file; PSM serves every file at its standard path.
LOCATION_FIELDS = ("Path", "File")
RSCRIPT_TIMEOUT = 600
#: R's own rules (tools:::.standard_regexps): a name, and a version of two or more numbers.
PACKAGE_NAME = r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]"
NAME = re.compile(PACKAGE_NAME)
_VERSION = re.compile(r"[0-9]+(?:[.-][0-9]+)+")
TARBALL = re.compile(rf"({PACKAGE_NAME})_([0-9]+(?:[.-][0-9]+)+)\.tar\.gz")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
SHA256_FIELDS = ("SHA256sum", "sha256sum", "SHA256", "sha256")
#: How R's connections end a line: LF, CRLF, and a lone CR too ("map CR or CRLF to LF").
_EOL = re.compile(rb"\r\n?|\n")
#: A blank line to R's `read.dcf`: spaces and tabs only (a form feed or a no-break space is text).
_BLANK = re.compile(rb"[ \t]*")
#: The fields PSM reads itself (name, version, checksums, location, license, dependencies); the
#: others it serves back as they came. Of these, the one-word ones.
ONE_WORD_FIELDS = ("Package", "Version", "MD5sum", *SHA256_FIELDS, *LOCATION_FIELDS)
READ_FIELDS = (*ONE_WORD_FIELDS, "License", *cran_filters.DEPENDENCY_FIELDS)
#: Whitespace R reads as text but Python's parsing (and R's `[[:space:]]` in some locales) as
#: space: form feed, vertical tab, no-break and other Unicode spaces.
_ODD_SPACE = re.compile(r"[^\S \t\n]")
#: An escaped blank line (` .`), as `read.dcf` recognizes one among a value's continuation lines.
_ESCAPED_BLANK = re.compile(r"[ \t\f\v]+\.[ \t\f\v]*")


# --- Names, versions, paths -------------------------------------------------------------------


def is_package_name(name: Any) -> bool:
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def is_package_version(version: Any) -> bool:
    return isinstance(version, str) and _VERSION.fullmatch(version) is not None


def archived_package(unit: str) -> str | None:
    """The package of an archive unit (`src/contrib/Archive/<package>`), else None."""
    if not unit.startswith(ARCHIVE):
        return None
    name = unit[len(ARCHIVE) :]
    return name if NAME.fullmatch(name) else None


def tarball(package: str, version: str) -> str:
    return f"{package}_{version}.tar.gz"


# --- Parsing PACKAGES -------------------------------------------------------------------------


def check_packages_file(fileobj: BinaryIO, url: str) -> None:
    """Refuse what is not a PACKAGES file at all: it would remove every package."""
    blank = True
    for line in r_lines(fileobj):
        if _BLANK.fullmatch(line):
            continue
        if blank and line.lstrip()[:1] == b"<":
            raise FormatError(url, "an HTML page, not a PACKAGES file")
        blank = False
        if line.startswith(b"Package:"):
            return
    if not blank:
        raise FormatError(url, "not a PACKAGES file: no stanza has a Package field")


def r_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a file as R's connections read them: LF, CRLF and a lone CR each end one.

    `chunks` are the file's lines (as a binary file iterates) or any pieces of it."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        # A CR at the end may be the first half of a CRLF: kept until the next chunk says.
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        *lines, rest = _EOL.split(data[:cut])
        rest += data[cut:]
        yield from lines
    if rest:
        yield rest.removesuffix(b"\r")


class Stanza:
    """One PACKAGES stanza as read: its fields (raw values, continuation lines kept), the line
    it starts on, and what was wrong with it (its fields then read as well as R would)."""

    __slots__ = ("fields", "line", "problem", "problem_line")

    def __init__(self, line: int) -> None:
        self.fields: dict[str, str] = {}
        self.line = line
        self.problem = ""
        self.problem_line = 0

    def fault(self, line: int, problem: str) -> None:
        if not self.problem:
            self.problem, self.problem_line = problem, line


def iter_stanzas(lines: Iterable[bytes], where: str) -> Iterator[Stanza]:
    """Stream the stanzas of a Debian-control-format file as R's `read.dcf` reads them
    (src/main/dcf.c): lines end at LF, CRLF or CR; a line of spaces and tabs ends a stanza; a
    line beginning with a space or tab continues the current field; any other is
    `Field: value`, the field everything before the first colon.

    A line R refuses (no colon, a continuation beginning a stanza) or that R versions read
    differently (a comment, a NUL byte, bytes not UTF-8), and a field given twice, mark their
    stanza as bad; they never stop the others.
    """
    stanza: Stanza | None = None
    key = None
    for number, raw in enumerate(r_lines(lines), start=1):
        line = raw.split(b"\0", 1)[0]  # R's C code ends a line at a NUL byte
        if _BLANK.fullmatch(line):
            if stanza is not None:
                yield stanza
            stanza, key = None, None
            continue
        if stanza is None:
            stanza = Stanza(number)
        if len(line) < len(raw):
            stanza.fault(number, "NUL byte in a line")
        key = _read_line(stanza, key, line, number)
    if stanza is not None:
        yield stanza


def _read_line(stanza: Stanza, key: str | None, line: bytes, number: int) -> str | None:
    """Add a (non-blank) line to the stanza; the field a continuation line now continues."""
    if line[:1] == b"#":
        # R-devel skips a comment line, R 4.2 stops at it (nothing of the file read), R 3.x
        # reads it as a field: refused, whichever R reads the stanza.
        stanza.fault(number, "comment line")
        return key
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        stanza.fault(number, "stanza is not UTF-8")
        text = line.decode("utf-8", "replace")
    if line[:1] in (b" ", b"\t"):
        if key is None:
            stanza.fault(number, "continuation line without a field")
        else:
            stanza.fields[key] += "\n" + text.rstrip(" \t")
        return key
    name, colon, value = text.partition(":")
    if not colon or not name:
        stanza.fault(number, "malformed line (expected 'Field: value')")
        return key
    if name in stanza.fields:
        stanza.fault(number, f"field {name} given twice")  # R would keep the last
    stanza.fields[name] = value.strip(" \t")
    return name


def parse_dcf(text: str, where: str) -> Iterator[dict[str, str]]:
    """The stanzas of a DCF text as field -> value (continuation lines folded into one line);
    FormatError names the line of the first malformed stanza."""
    for stanza in iter_stanzas(text.encode().splitlines(keepends=True), where):
        if stanza.problem:
            raise FormatError(f"{where} line {stanza.problem_line}", stanza.problem)
        yield {key: fold(value) for key, value in stanza.fields.items()}


def fold(value: str) -> str:
    """A field value on one line (whitespace runs become one space)."""
    return " ".join(value.split())


def dcf_value(raw: str) -> str:
    """A raw value (continuation lines kept) as `read.dcf` gives it: continuation lines without
    their indentation, joined by newlines; an escaped blank line (` .`) an empty line before the
    next one."""
    first, *continued = raw.split("\n")
    lines, escaped = [first] if first else [], 0
    for line in continued:
        if _ESCAPED_BLANK.fullmatch(line):
            escaped += 1
        else:
            lines += [""] * escaped + [line.strip(" \t")]
            escaped = 0
    return "\n".join(lines)


def r_listing(fields: Mapping[str, str]) -> tuple[str, tuple[int, ...]] | None:
    """The package and version (in R's version order) R reads in a stanza's fields, if valid."""
    name, version = dcf_value(fields.get("Package", "")), dcf_value(fields.get("Version", ""))
    if is_package_name(name) and is_package_version(version):
        return name, r_version(version)
    return None


def read_fields_problem(fields: Mapping[str, str]) -> str:
    """Why R may read a field PSM reads otherwise than PSM does ("" if it cannot).

    PSM parses those fields (names, versions, checksums, dependencies, licenses) where R's
    versions and locales differ: on whitespace other than spaces and tabs, on an escaped blank
    line (older R keeps a newline at a value's end for it, recent R not), on a one-word field
    continued on the next line (older R begins its value with a newline when the first line is
    empty)."""
    for name in READ_FIELDS:
        value = fields.get(name, "")
        if _ODD_SPACE.search(value):
            return f"{name} has whitespace other than spaces and tabs"
        continued = value.split("\n")[1:]
        if any(_ESCAPED_BLANK.fullmatch(line) for line in continued):
            return f"{name} has an escaped blank line (' .')"
        if continued and name in ONE_WORD_FIELDS:
            return f"{name} continues on another line"
    return ""


def stanza_record(stanza: Stanza, url: str) -> PackageRecord | Rejected:
    """Check one stanza of `<source>/src/contrib/PACKAGES[.gz]` and turn it into a record."""
    fields = stanza.fields
    name, version = fields.get("Package", ""), fields.get("Version", "")
    label = tarball(name, version) if name and version else (name or f"line {stanza.line}")
    if stanza.problem:
        return Rejected(label[:255], stanza.problem)
    if not name or not version:
        return Rejected(label[:255], "stanza lacks Package or Version")
    problem = read_fields_problem(fields)
    if problem:
        return Rejected(label[:255], problem)
    if not is_package_name(name):
        return Rejected(label[:255], "invalid package name")
    if not is_package_version(version):
        return Rejected(label[:255], "invalid version")
    filename = tarball(name, version)
    md5 = fields.get("MD5sum", "")
    sha256 = next((fields[k] for k in SHA256_FIELDS if k in fields), "")
    if md5 and not _MD5.fullmatch(md5):
        return Rejected(filename, "malformed MD5sum")
    if sha256 and not _SHA256.fullmatch(sha256):
        return Rejected(filename, "malformed sha256")
    if not md5 and not sha256:
        return Rejected(filename, "no MD5sum to verify the file with")
    location = _upstream_location(fields, filename)
    if location is None:
        return Rejected(filename, "unsafe Path or File")
    document = {k: v for k, v in fields.items() if k not in LOCATION_FIELDS}
    raw = orjson.dumps(document)
    upstream = url.rsplit("/", 1)[0] + "/" + location
    return PackageRecord(
        name=name,
        version=version,
        filename=filename,
        unit=CONTRIB,
        url=upstream,
        sha256=sha256.lower() or None,
        md5=md5.lower() or None,
        license=fold(fields.get("License", "")) or None,
        depends=tuple(cran_filters.dependencies(document)),
        extra=document,
        document=raw.decode(),
        entry_digest=entry_digest(raw, upstream),
    )


def packages_records(lines: Iterable[bytes], url: str) -> Iterator[PackageRecord | Rejected]:
    """The records of a PACKAGES file's stanzas, one by one.

    Of stanzas giving one package version (as R compares versions: `1.0-1` is `1.0.1`),
    `install.packages` takes the first; PSM publishes in its own order, so it keeps only the
    first (even one it rejects) and rejects the others."""
    listed: dict[tuple[str, tuple[int, ...]], str] = {}
    for stanza in iter_stanzas(lines, url):
        item = stanza_record(stanza, url)
        listing = r_listing(stanza.fields)
        if listing in listed and isinstance(item, PackageRecord):
            first = listed[listing]
            same = first == item.version
            item = Rejected(item.filename, "listed twice" + ("" if same else f" (as {first})"))
        if listing is not None:
            listed.setdefault(listing, dcf_value(stanza.fields["Version"]))
        yield item


def _upstream_location(fields: Mapping[str, str], filename: str) -> str | None:
    """Where upstream keeps the file, relative to `src/contrib/` (its `Path` and `File`)."""
    path, name = fields.get("Path", "").strip("/"), fields.get("File", "") or filename
    parts = [*(path.split("/") if path else []), name]
    if any(not _SAFE_SEGMENT.fullmatch(p) or ".." in p for p in parts):
        return None
    return "/".join(quote(p) for p in parts)


# --- Archive listings -------------------------------------------------------------------------


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def archive_records(
    body: bytes, url: str, unit: str, package: str
) -> Iterator[PackageRecord | Rejected]:
    """The tarballs of `package` an archive folder's listing links to.

    Only plain relative links `<package>_<version>.tar.gz` count (sorting links and the parent
    folder are ignored); a tarball link of another shape (another folder, another package) is
    rejected.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")  # Apache listings of old servers
    parser = _Anchors()
    try:
        parser.feed(text)
        parser.close()
    except AssertionError as exc:
        raise FormatError(url, f"malformed HTML: {exc}") from None
    for href in parser.hrefs:
        target = unquote(href.split("?", 1)[0].split("#", 1)[0]).removeprefix("./")
        if not target.endswith(".tar.gz"):
            continue
        match = TARBALL.fullmatch(target)
        if match is None or match[1] != package:
            yield Rejected(target[-255:], f"unsafe or foreign archive link in {package}'s folder")
            continue
        document = {"Package": package, "Version": match[2]}
        raw = orjson.dumps(document)
        location = url + quote(target)
        yield PackageRecord(
            name=package,
            version=match[2],
            filename=target,
            unit=unit,
            url=location,
            extra=document,
            document=raw.decode(),
            entry_digest=entry_digest(raw, location),
        )


# --- Rendering --------------------------------------------------------------------------------


def render_stanza(document: Mapping[str, str]) -> bytes:
    """A stored document as its PACKAGES stanza (fields in order, continuation lines kept)."""
    lines = [f"{key}: {value}" if value else f"{key}:" for key, value in document.items()]
    return ("\n".join(lines) + "\n").encode()


def render_packages(documents: Iterable[tuple[str, str | bytes]], emit: Emit) -> None:
    """PACKAGES and PACKAGES.gz in one pass; PACKAGES.rds from it where Rscript exists."""
    write_packages((render_stanza(orjson.loads(record)) for _filename, record in documents), emit)


def write_packages(stanzas: Iterable[bytes], emit: Emit) -> None:
    """PACKAGES and PACKAGES.gz of these stanzas (blank lines between them) in one pass;
    PACKAGES.rds from it where Rscript exists."""
    rscript = shutil.which("Rscript")
    count = 0
    with (
        tempfile.NamedTemporaryFile(prefix="psm-packages-", delete=False) as plain_copy,
        emit(f"{CONTRIB}/PACKAGES", DCF_TYPE) as plain,
        emit(f"{CONTRIB}/PACKAGES.gz", GZIP_TYPE) as packed,
    ):
        try:
            # Deterministic gzip (no name, no time): an unchanged index keeps its ETag.
            compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
            for stanza in stanzas:
                stanza = (b"\n" if count else b"") + stanza
                count += 1
                plain.write(stanza)
                packed.write(compressor.compress(stanza))
                if rscript:
                    plain_copy.write(stanza)
            packed.write(compressor.flush())
            plain_copy.close()
            if rscript and count:
                _render_rds(rscript, plain_copy.name, emit)
        finally:
            os.unlink(plain_copy.name)


#: Writes what `tools::write_PACKAGES` writes: the read.dcf matrix, rows named by package.
_RDS_SCRIPT = (
    "a <- commandArgs(TRUE); db <- read.dcf(a[1]); "
    'rownames(db) <- db[, "Package"]; saveRDS(db, a[2], compress = "xz")'
)


def _render_rds(rscript: str, packages: str, emit: Emit) -> None:
    """PACKAGES.rds, which R reads first; skipped (clients fall back to PACKAGES.gz) if R fails."""
    _rscript_to(rscript, _RDS_SCRIPT, [packages], f"{CONTRIB}/PACKAGES.rds", emit)


def _rscript_to(rscript: str, script: str, inputs: list[str], path: str, emit: Emit) -> None:
    """Emit at `path` the file `script` writes from the `inputs` files (its arguments: the
    inputs, then the target); nothing (logged) if R fails."""
    with tempfile.TemporaryDirectory(prefix="psm-rds-") as folder:
        target = os.path.join(folder, "out.rds")
        try:
            subprocess.run(
                [rscript, "--vanilla", "-e", script, *inputs, target],
                check=True,
                capture_output=True,
                timeout=RSCRIPT_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            logger.warning("%s not written: %s %s", path, exc, stderr.decode()[-500:])
            return
        with open(target, "rb") as source, emit(path, RDS_TYPE) as out:
            shutil.copyfileobj(source, out)


#: CRAN's Meta/archive.rds: package name -> data.frame of file.info() rows, named
#: `<pkg>/<tarball>` (oldest version first), from TSV rows (package, path, size, mtime).
#: gzip (saveRDS's default), as CRAN's: some readers wrap the URL in gzcon(), which reads no xz.
_ARCHIVE_SCRIPT = """
a <- commandArgs(TRUE)
x <- read.delim(a[1], header = FALSE, quote = "", comment.char = "",
                colClasses = c("character", "character", "numeric", "numeric"))
n <- nrow(x); t <- .POSIXct(x[[4]])
info <- data.frame(size = x[[3]], isdir = rep(FALSE, n), mode = rep(420L, n),
                   mtime = t, ctime = t, atime = t,
                   uid = rep(NA_integer_, n), gid = rep(NA_integer_, n),
                   uname = rep(NA_character_, n), grname = rep(NA_character_, n),
                   row.names = x[[2]], stringsAsFactors = FALSE)
class(info$mode) <- "octmode"
saveRDS(split(info, factor(x[[1]], levels = unique(x[[1]]))), a[2])
"""


def render_archive_rds(files: Iterable[tuple[str, str, int | None, Any]], emit: Emit) -> None:
    """Meta/archive.rds of the served archive files, where Rscript exists (else left out).

    Sizes are the stored files' (NA before a passive file's first download); times are when
    PSM first listed the file, as `file.info` on a mirror's disk would say.
    """
    rscript = shutil.which("Rscript")
    if rscript is None:
        return
    rows = 0
    with tempfile.NamedTemporaryFile("w", prefix="psm-archive-", suffix=".tsv") as table:
        for unit, group in groupby(files, key=lambda row: row[0]):
            package = archived_package(unit)
            versions = []
            for _, filename, size, added in group:
                match = TARBALL.fullmatch(filename)
                if package is None or match is None or match[1] != package:
                    continue
                versions.append((r_version(match[2]), filename, size, added))
            for _, filename, size, added in sorted(versions, key=lambda v: v[0]):
                size_text = "NA" if size is None else str(size)
                table.write(f"{package}\t{package}/{filename}\t{size_text}\t")
                table.write(f"{int(added.timestamp())}\n")
                rows += 1
        table.flush()
        if rows:
            _rscript_to(rscript, _ARCHIVE_SCRIPT, [table.name], META_ARCHIVE, emit)


def render_listing(unit: str, filenames: Iterable[str]) -> bytes:
    """An archive folder's listing, shaped like the one CRAN serves (relative links)."""
    title = html.escape(f"Index of /{unit}")
    links = "".join(
        f'<a href="{quote(name)}">{html.escape(name)}</a>\n' for name in sorted(filenames)
    )
    return (
        f"<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n"
        f'<h1>{title}</h1>\n<pre><a href="../">Parent Directory</a>\n{links}</pre>\n'
        "</body>\n</html>\n"
    ).encode()


# --- Withdrawing files from a published index -------------------------------------------------

_PACKAGE_LINE = re.compile(rb"^Package:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
_VERSION_LINE = re.compile(rb"^Version:[ \t]*(\S+)[ \t]*$", re.MULTILINE)


def withdraw_packages(published: BinaryIO, filenames: set[str], emit: Emit) -> bool:
    """PACKAGES, PACKAGES.gz (and PACKAGES.rds) written again from the published PACKAGES
    without the stanzas of the `filenames` tarballs, every other stanza byte for byte; False
    (nothing emitted) if it has none of them. Streamed: memory holds one stanza."""
    dropped = False
    with tempfile.TemporaryFile() as kept:
        for stanza in _raw_stanzas(published):
            if _stanza_filename(stanza) in filenames:
                dropped = True
            else:
                kept.write(stanza + b"\n")
        if not dropped:
            return False
        kept.seek(0)
        write_packages(_raw_stanzas(kept), emit)
    return True


def _raw_stanzas(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The stanzas of a DCF file PSM wrote (LF line ends), each ending in a newline; blank
    lines, as R reads them, split (a line of a form feed is a continuation line to R)."""
    stanza: list[bytes] = []
    for line in r_lines(lines):
        if not _BLANK.fullmatch(line):
            stanza.append(line + b"\n")
        elif stanza:
            yield b"".join(stanza)
            stanza = []
    if stanza:
        yield b"".join(stanza)


def _stanza_filename(stanza: bytes) -> str | None:
    package, version = _PACKAGE_LINE.search(stanza), _VERSION_LINE.search(stanza)
    if package is None or version is None:
        return None
    return tarball(package[1].decode("utf-8", "replace"), version[1].decode("utf-8", "replace"))


def withdraw_listing(unit: str, page: bytes, filenames: set[str]) -> tuple[bytes, set[str]]:
    """An archive folder's listing (as `render_listing` wrote it) without the `filenames`,
    and which of them it listed (none: the page is returned unchanged)."""
    parser = _Anchors()
    parser.feed(page.decode("utf-8", "replace"))
    parser.close()
    listed = [unquote(href) for href in parser.hrefs if href.endswith(".tar.gz")]
    removed = filenames.intersection(listed)
    if not removed:
        return page, removed
    return render_listing(unit, [name for name in listed if name not in removed]), removed


#: Meta/archive.rds without the rows of the files named in a text file (`<pkg>/<tarball>`
#: lines); a package left with no rows goes.
_WITHDRAW_ARCHIVE_SCRIPT = """
a <- commandArgs(TRUE)
db <- readRDS(a[1]); gone <- readLines(a[2])
db <- lapply(db, function(info) info[!(rownames(info) %in% gone), , drop = FALSE])
saveRDS(db[vapply(db, nrow, 0L) > 0], a[3])
"""


def withdraw_archive_rds(published: BinaryIO, files: Iterable[str], emit: Emit) -> None:
    """Meta/archive.rds without the rows of `files` (`<package>/<tarball>`), where Rscript
    exists; nothing emitted otherwise (the caller drops the published one: R tools then find
    no archive, rather than versions PSM no longer serves)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return
    with tempfile.TemporaryDirectory(prefix="psm-withdraw-") as folder:
        current, gone = os.path.join(folder, "archive.rds"), os.path.join(folder, "gone.txt")
        with open(current, "wb") as out:
            shutil.copyfileobj(published, out)
        with open(gone, "w", encoding="utf-8") as out:
            out.writelines(f"{name}\n" for name in sorted(files))
        _rscript_to(rscript, _WITHDRAW_ARCHIVE_SCRIPT, [current, gone], META_ARCHIVE, emit)

"""CRAN-like R repositories: `src/contrib/PACKAGES` (Debian control format) and source tarballs.

Units: `src/contrib` is the repository's index (`PACKAGES.gz`, else `PACKAGES`, fetched
conditionally); with the mirror option `archive`, each mirrored package also has a unit
`src/contrib/Archive/<package>`, read from the directory listing CRAN serves there. Most
packages have no such folder: a 404 is remembered and not asked again while the package's
PACKAGES entry stays the same (within a `MISSING_RECHECK` period).

A PACKAGES stanza is one record. Its `document` is the stanza as PSM serves it back: every field
verbatim, in upstream's order (continuation lines kept), as a JSON object — except `Path` and
`File`, which only say where upstream keeps the file: PSM serves every tarball at
`src/contrib/<Package>_<Version>.tar.gz`. Stanzas whose name, version or checksum is missing or
malformed are rejected one by one; the others go on. `MD5sum` (and a sha256, `SHA256sum`,
where a repository gives one) is verified on every download.

Archive tarballs are listed in no index, so no checksum is known for them: they are stored
content-addressed by the sha256 of what upstream sent, and judged by the filters with the
license and dependencies of the package's current entry.

Published layout, relative to the channel root (also served under `cran/`, the CRAN base URL
PSM's documentation gives)::

    src/contrib/PACKAGES, PACKAGES.gz, PACKAGES.rds    the index (.rds only where R is installed)
    src/contrib/<Package>_<Version>.tar.gz             a source package
    src/contrib/Archive/<Package>/                     an archive listing (index.html)
    src/contrib/Archive/<Package>/<Package>_<Version>.tar.gz
    src/contrib/Meta/archive.rds                       the archive files (where R is installed)
"""

from __future__ import annotations

import gzip
import html
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from itertools import groupby
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import orjson

from . import cran_filters
from .base import (
    Client,
    Emit,
    Fetched,
    FormatError,
    IndexRequest,
    IndexSource,
    IsCurrent,
    PackageRecord,
    Rejected,
    RepositoryFormat,
    Unchanged,
    UnitExtras,
    entry_digest,
)
from .cran_filters import r_version  # noqa: F401 - R version order, defined once there

logger = logging.getLogger(__name__)

CONTRIB = "src/contrib"
ARCHIVE = "src/contrib/Archive/"
#: What R tools (`remotes::install_version`, `tools:::CRAN_archive_db`) read to find archived
#: versions without listing folders.
META_ARCHIVE = "src/contrib/Meta/archive.rds"
#: The alternative CRAN base URL inside a channel (`/api/repo/<channel>/cran/`).
CRAN_PREFIX = "cran/"
INDEX_FILES = ("PACKAGES.gz", "PACKAGES")
#: The largest archive listing accepted (CRAN's biggest are a few hundred KB).
MAX_LISTING_BYTES = 16 * 1024 * 1024
DCF_TYPE = "text/plain; charset=utf-8"
GZIP_TYPE = "application/x-gzip"
RDS_TYPE = "application/octet-stream"
HTML_TYPE = "text/html; charset=utf-8"
#: Fields that say where upstream keeps a file; PSM serves every file at its standard path.
LOCATION_FIELDS = ("Path", "File")
RSCRIPT_TIMEOUT = 600
#: How long at most an Archive folder's 404 is trusted while its package's PACKAGES entry is
#: unchanged (every remembered 404 is asked again when a new period begins).
MISSING_RECHECK = timedelta(days=7)

#: R's own rules (tools:::.standard_regexps): a name, and a version of two or more numbers.
PACKAGE_NAME = r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]"
_NAME = re.compile(PACKAGE_NAME)
_VERSION = re.compile(r"[0-9]+(?:[.-][0-9]+)+")
_TARBALL = re.compile(rf"({PACKAGE_NAME})_([0-9]+(?:[.-][0-9]+)+)\.tar\.gz")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_FIELD = re.compile(rb"([^\s:#-][^\s:]*):(.*)")
SHA256_FIELDS = ("SHA256sum", "sha256sum", "SHA256", "sha256")


class CranFormat(RepositoryFormat):
    kind = "cran"
    label = "standard R"
    source_help = (
        "A CRAN-like repository, e.g. https://cloud.r-project.org; another PSM channel: "
        "https://<host>/api/repo/<channel>/cran (or without /cran)."
    )
    options_help = (
        '{"packages": ["ggplot2", "dplyr (>= 1.1)"], "exclude": ["Rcpp (< 1.0)"], '
        '"licenses": ["MIT", "GPL"], "r_version": "4.4.1", "latest": 2, "dependencies": true, '
        '"archive": false}'
    )
    renders_units_alone = True
    #: `src/contrib/...` and the alternative base URL `cran/` of every R channel.
    reserved_subchannel_names = frozenset({"src", CRAN_PREFIX.rstrip("/")})
    #: MD5sum is what R repositories give; a sha256 beside it is checked too.
    checks_every_digest = True

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The mirror filters (see `cran_filters`), validated."""
        return cran_filters.clean(options or {})

    def filter_files(
        self, options: Mapping[str, Any], files: Iterable[tuple[str, str, str, str, Mapping]]
    ) -> dict[str, str] | None:
        """Standard R mirrors are filtered by their mirror filters, not by policies."""
        return cran_filters.decide(
            options,
            (
                cran_filters.RFile(key, unit, filename, version, document)
                for key, unit, filename, version, document in files
            ),
        )

    # --- Units ------------------------------------------------------------------------------

    def index_units(self, client: Client, source_url: str, options: Mapping[str, Any]) -> list[str]:
        """`src/contrib`, and with `archive` one unit per mirrored package's Archive folder."""
        return list(self.list_units(client, source_url, options))

    def list_units(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> dict[str, int | None]:
        """`src/contrib` (no serial: always asked, conditionally) and with `archive` the
        mirrored packages' Archive folders. An Archive folder's serial is a digest of its
        package's PACKAGES entries and the current `MISSING_RECHECK` period: a remembered 404
        holds while both are the same (a new version may move the old one there; a mirror
        upstream may sync PACKAGES before the folder)."""
        units: dict[str, int | None] = {CONTRIB: None}
        if options.get("archive"):
            entries, now = self._package_entries(client, source_url), datetime.now(UTC)
            for name in sorted(cran_filters.archived_names(options, set(entries))):
                units[archive_unit(name)] = archive_serial(name, entries[name], now)
        return units

    def _package_entries(self, client: Client, source_url: str) -> dict[str, list[int]]:
        """Package name -> digests of its stanzas in the source's PACKAGES."""
        entries: dict[str, list[int]] = {}
        with tempfile.TemporaryFile() as index:
            fetched = self.fetch_unit(client, source_url, CONTRIB, index, {})
            for item in self.parse_unit(index, fetched.url, CONTRIB):
                if isinstance(item, PackageRecord):
                    entries.setdefault(item.name, []).append(item.digest)
        return entries

    def fetch_unit(
        self,
        client: Client,
        source_url: str,
        unit: str,
        dest: BinaryIO,
        validators: Mapping[str, str],
    ) -> Fetched:
        """Fetch PACKAGES (`.gz` preferred, decompressed into `dest`) or an archive listing,
        conditionally on the validators of the same URL."""
        base = contrib_url(source_url)
        if unit == CONTRIB:
            for name in INDEX_FILES:
                url = base + name
                with tempfile.TemporaryFile() as raw:
                    target = raw if name.endswith(".gz") else dest
                    download = client.download(url, target, headers=_conditional(url, validators))
                    if download.status == 304:
                        return Fetched("unchanged", url, dict(validators))
                    if download.status == 404:
                        continue
                    if download.status != 200:
                        raise FormatError(url, f"unexpected HTTP status {download.status}")
                    if target is raw:
                        raw.seek(0)
                        _gunzip(raw, dest, url, client.max_bytes)
                dest.seek(0)
                return Fetched("changed", url, _validators(url, download))
            raise FormatError(
                base + "PACKAGES", "no PACKAGES index (neither PACKAGES.gz nor PACKAGES exists)"
            )
        package = archived_package(unit)
        if package is None:
            raise FormatError(unit, "not an index unit of a CRAN-like repository")
        url = f"{base}Archive/{quote(package)}/"
        limit = min(client.max_bytes, MAX_LISTING_BYTES)
        download = client.download(
            url, dest, headers=_conditional(url, validators), max_bytes=limit
        )
        # A folder that exists is asked for on every run (a 304 when unchanged): upstream may
        # add to it without PACKAGES saying so.
        if download.status == 304:
            return Fetched("unchanged", url, dict(validators), serial_vouches=False)
        if download.status == 404:
            # Most packages were never updated, so have no folder: remembered by its serial.
            return Fetched("missing", url, {"url": url, "missing": "404"})
        if download.status != 200:
            raise FormatError(url, f"unexpected HTTP status {download.status}")
        dest.seek(0)
        return Fetched("changed", url, _validators(url, download), serial_vouches=False)

    def parse_unit(
        self,
        fileobj: BinaryIO,
        url: str,
        unit: str,
        is_current: IsCurrent | None = None,
        current: Callable[[], Mapping[str, int]] | None = None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """One record per stanza of PACKAGES (or file of an archive listing).

        PACKAGES is checked as a whole first (an HTML page or a file without one readable
        stanza fails the unit instead of emptying the channel); then stanzas stream one at a
        time, each checked on its own.
        """
        fileobj.seek(0)
        if unit == CONTRIB:
            _check_packages_file(fileobj, url)
            fileobj.seek(0)
            items: Iterator[PackageRecord | Rejected] = (
                stanza_record(stanza, url) for stanza in iter_stanzas(fileobj, url)
            )
        else:
            package = archived_package(unit)
            if package is None:
                raise FormatError(unit, "not an index unit of a CRAN-like repository")
            items = archive_records(fileobj.read(), url, unit, package)
        seen: set[str] = set()
        for item in items:
            if isinstance(item, PackageRecord):
                if item.filename in seen:
                    item = Rejected(item.filename, "listed twice")
                elif is_current is not None and is_current(item.filename, item.digest):
                    item = Unchanged(item.filename)
                seen.add(item.filename)
            yield item

    # --- Publishing -------------------------------------------------------------------------

    def unit_paths(self, unit: str) -> list[str]:
        if unit == CONTRIB:
            return [f"{CONTRIB}/{name}" for name in ("PACKAGES", "PACKAGES.gz", "PACKAGES.rds")]
        # Meta/archive.rds covers every archive folder: a changed one replaces (or drops) it.
        return [f"{unit}/index.html", META_ARCHIVE]

    def render_index(self, source: IndexSource, emit: Emit, units: set[str] | None = None) -> None:
        """PACKAGES, PACKAGES.gz (and PACKAGES.rds where Rscript is installed), a listing per
        archive folder, and Meta/archive.rds: all of them, or those `units` affect."""
        listed = set(source.units())
        if units is None or CONTRIB in units:
            _render_packages(source.documents(CONTRIB), emit)
        archived = sorted(u for u in listed if archived_package(u))
        for unit in archived if units is None else [u for u in archived if u in units]:
            files = [filename for filename, _ in source.documents(unit)]
            if files:
                with emit(f"{unit}/index.html", HTML_TYPE) as out:
                    out.write(render_listing(unit, files))
        if archived and (units is None or any(archived_package(u) for u in units)):
            _render_archive_rds(source.files(archived), emit)

    def index_request(self, path: str, accept: str | None) -> IndexRequest | None:
        """The `cran/` base URL serves the same files; an archive folder serves its listing."""
        inner = path.removeprefix(CRAN_PREFIX)
        prefix = path[: len(path) - len(inner)]
        if inner.startswith(ARCHIVE):
            rest = inner[len(ARCHIVE) :]
            if _NAME.fullmatch(rest):
                return IndexRequest(redirect=f"{prefix}{inner}/")
            if rest.endswith("/") and _NAME.fullmatch(rest[:-1]):
                return IndexRequest(path=f"{inner}index.html")
        return IndexRequest(path=inner) if prefix and inner else None

    def locate(self, path: str) -> tuple[str, str] | None:
        """(unit, filename) of `src/contrib/<tarball>` or `src/contrib/Archive/<pkg>/<tarball>`."""
        unit, _, filename = path.removeprefix(CRAN_PREFIX).rpartition("/")
        match = _TARBALL.fullmatch(filename)
        if match is None:
            return None
        if unit == CONTRIB or archived_package(unit) == match[1]:
            return unit, filename
        return None


# --- Names, versions, paths -------------------------------------------------------------------


def is_package_name(name: Any) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def is_package_version(version: Any) -> bool:
    return isinstance(version, str) and _VERSION.fullmatch(version) is not None


def archive_unit(package: str) -> str:
    return f"{ARCHIVE}{package}"


def archive_serial(package: str, entries: Iterable[int], now: datetime) -> int:
    """The serial of `package`'s Archive folder: its PACKAGES entries' digests and the
    `MISSING_RECHECK` period `now` is in."""
    period = int(now.timestamp() // MISSING_RECHECK.total_seconds())
    return entry_digest(orjson.dumps([period, sorted(entries)]), package)


def archived_package(unit: str) -> str | None:
    """The package of an archive unit (`src/contrib/Archive/<package>`), else None."""
    if not unit.startswith(ARCHIVE):
        return None
    name = unit[len(ARCHIVE) :]
    return name if _NAME.fullmatch(name) else None


def tarball(package: str, version: str) -> str:
    return f"{package}_{version}.tar.gz"


def contrib_url(source_url: str) -> str:
    """`<source>/src/contrib/` of a CRAN-like base URL."""
    return source_url.rstrip("/") + "/src/contrib/"


def _conditional(url: str, validators: Mapping[str, str]) -> dict[str, str]:
    headers = {}
    if validators.get("url") == url:
        if validators.get("etag"):
            headers["If-None-Match"] = validators["etag"]
        if validators.get("last_modified"):
            headers["If-Modified-Since"] = validators["last_modified"]
    return headers


def _validators(url: str, download: Any) -> dict[str, str]:
    kept = {"url": url, "etag": download.etag, "last_modified": download.last_modified}
    return {k: v for k, v in kept.items() if v}


def _gunzip(raw: BinaryIO, dest: BinaryIO, url: str, limit: int) -> None:
    """Decompress into `dest`, refusing more than `limit` bytes (a decompression bomb)."""
    total = 0
    try:
        with gzip.GzipFile(fileobj=raw) as reader:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise FormatError(url, f"decompresses to more than the {limit} byte limit")
                dest.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise FormatError(url, f"not a valid gzip file: {exc}") from None


# --- Parsing PACKAGES -------------------------------------------------------------------------


def _check_packages_file(fileobj: BinaryIO, url: str) -> None:
    """Refuse what is not a PACKAGES file at all: it would remove every package."""
    blank = True
    for line in fileobj:
        if not line.strip():
            continue
        if blank and line.lstrip()[:1] == b"<":
            raise FormatError(url, "an HTML page, not a PACKAGES file")
        blank = False
        if line.startswith(b"Package:"):
            return
    if not blank:
        raise FormatError(url, "not a PACKAGES file: no stanza has a Package field")


class Stanza:
    """One PACKAGES stanza as read: its fields (raw values, continuation lines kept), the line
    it starts on, and what was wrong with it."""

    __slots__ = ("fields", "line", "problem", "problem_line")

    def __init__(self, line: int) -> None:
        self.fields: dict[str, str] = {}
        self.line = line
        self.problem = ""
        self.problem_line = 0

    def fault(self, line: int, problem: str) -> None:
        self.problem, self.problem_line = problem, line


def iter_stanzas(lines: Iterable[bytes], where: str) -> Iterator[Stanza]:
    """Stream the stanzas of a Debian-control-format file (R's `read.dcf` rules).

    A malformed line (not `Field: value`, not UTF-8, a continuation without a field) marks
    its stanza as bad; it never stops the others.
    """
    stanza: Stanza | None = None
    key = None
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            if stanza is not None:
                yield stanza
            stanza, key = None, None
            continue
        if stanza is None:
            stanza = Stanza(number)
        if stanza.problem:
            continue
        try:
            text = line.decode("utf-8").rstrip()
        except UnicodeDecodeError:
            stanza.fault(number, "stanza is not UTF-8")
            continue
        if line[:1] in (b" ", b"\t"):
            if key is None:
                stanza.fault(number, "continuation line without a field")
            else:
                stanza.fields[key] += "\n" + text
            continue
        match = _FIELD.fullmatch(line)
        if match is None:
            stanza.fault(number, "malformed line (expected 'Field: value')")
            continue
        key = match[1].decode("utf-8")
        if key in stanza.fields:
            stanza.fault(number, f"field {key} given twice")
            continue
        stanza.fields[key] = match[2].decode("utf-8").strip()
    if stanza is not None:
        yield stanza


def parse_dcf(text: str, where: str) -> Iterator[dict[str, str]]:
    """The stanzas of a DCF text as field -> value (continuation lines folded into one line);
    FormatError names the line of the first malformed stanza."""
    for stanza in iter_stanzas(text.encode().splitlines(keepends=True), where):
        if stanza.problem:
            raise FormatError(f"{where} line {stanza.problem_line}", stanza.problem)
        yield {key: fold(value) for key, value in stanza.fields.items()}


def fold(value: str) -> str:
    """A field value on one line, as `read.dcf` gives it (whitespace runs become one space)."""
    return " ".join(value.split())


def stanza_record(stanza: Stanza, url: str) -> PackageRecord | Rejected:
    """Check one stanza of `<source>/src/contrib/PACKAGES[.gz]` and turn it into a record."""
    fields = stanza.fields
    name, version = fields.get("Package", ""), fields.get("Version", "")
    label = tarball(name, version) if name and version else (name or f"line {stanza.line}")
    if stanza.problem:
        return Rejected(label[:255], stanza.problem)
    if not name or not version:
        return Rejected(label[:255], "stanza lacks Package or Version")
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
        subdir=CONTRIB,
        url=upstream,
        sha256=sha256.lower() or None,
        md5=md5.lower() or None,
        license=fold(fields.get("License", "")) or None,
        depends=tuple(cran_filters.dependencies(document)),
        extra=document,
        document=raw.decode(),
        digest=entry_digest(raw, upstream),
    )


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
        match = _TARBALL.fullmatch(target)
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
            subdir=unit,
            url=location,
            extra=document,
            document=raw.decode(),
            digest=entry_digest(raw, location),
        )


# --- Rendering --------------------------------------------------------------------------------


def render_stanza(document: Mapping[str, str]) -> bytes:
    """A stored document as its PACKAGES stanza (fields in order, continuation lines kept)."""
    lines = [f"{key}: {value}" if value else f"{key}:" for key, value in document.items()]
    return ("\n".join(lines) + "\n").encode()


def _render_packages(documents: Iterable[tuple[str, str | bytes]], emit: Emit) -> None:
    """PACKAGES and PACKAGES.gz in one pass; PACKAGES.rds from it where Rscript exists."""
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
            for _filename, record in documents:
                stanza = (b"\n" if count else b"") + render_stanza(orjson.loads(record))
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
    _rscript_to(rscript, _RDS_SCRIPT, packages, f"{CONTRIB}/PACKAGES.rds", emit)


def _rscript_to(rscript: str, script: str, data: str, path: str, emit: Emit) -> None:
    """Emit at `path` the file `script` writes from `data` (its arguments: data, target);
    nothing (logged) if R fails."""
    with tempfile.TemporaryDirectory(prefix="psm-rds-") as folder:
        target = os.path.join(folder, "out.rds")
        try:
            subprocess.run(
                [rscript, "--vanilla", "-e", script, data, target],
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


def _render_archive_rds(files: Iterable[tuple[str, str, int | None, Any]], emit: Emit) -> None:
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
                match = _TARBALL.fullmatch(filename)
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
            _rscript_to(rscript, _ARCHIVE_SCRIPT, table.name, META_ARCHIVE, emit)


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

"""CRAN-like R repositories: `src/contrib/PACKAGES` (Debian control format) and source tarballs.

Units: `src/contrib` is the repository's index (`PACKAGES.gz`, else `PACKAGES`, fetched
conditionally); with the mirror option `archive`, each mirrored package also has a unit
`src/contrib/Archive/<package>`, read from the directory listing CRAN serves there. Most
packages have no such folder: a 404 is remembered and not asked again while the package's
PACKAGES entry stays the same (within a `MISSING_RECHECK` period).

A PACKAGES stanza is one record. Its `document` is the stanza as PSM serves it back: every field
verbatim, in upstream's order (continuation lines kept), as a JSON object — except `Path` and
`File`, which only say where upstream keeps the file: PSM serves every tarball at
`src/contrib/<Package>_<Version>.tar.gz`. Stanzas are read as R's `read.dcf` reads them
(`cran_index.iter_stanzas`); stanzas whose name, version or checksum is missing or malformed,
that R refuses, or that R versions would read differently, are rejected one by one; the others
go on. Of stanzas giving one version of a package (as R compares versions), only the first is
kept: `install.packages` takes the first. `MD5sum` (and a sha256, `SHA256sum`, where a
repository gives one) is verified on every download.

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

This module is the format (units, fetching, paths); `cran_index` parses and renders the index
files and `cran_filters` holds the mirror filters.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import quote

import orjson

from . import cran_filters
from .base import (
    Client,
    Documents,
    Emit,
    Fetched,
    FormatCapabilities,
    FormatError,
    IndexFetch,
    IndexRequest,
    IndexSource,
    PackageRecord,
    PublishedIndex,
    Rejected,
    RepositoryFormat,
    StoredEntries,
    Unchanged,
    UnitExtras,
    UnitList,
    entry_digest,
    fetch_document,
    fetch_first,
)
from .cran_index import (
    ARCHIVE,
    CONTRIB,
    META_ARCHIVE,
    NAME,
    TARBALL,
    archive_records,
    archived_package,
    check_packages_file,
    packages_records,
    render_archive_rds,
    render_listing,
    render_packages,
    withdraw_archive_rds,
    withdraw_listing,
    withdraw_packages,
)

#: The alternative CRAN base URL inside a channel (`/api/repo/<channel>/cran/`).
CRAN_PREFIX = "cran/"
INDEX_FILES = ("PACKAGES.gz", "PACKAGES")
#: The largest archive listing accepted (CRAN's biggest are a few hundred KB).
MAX_LISTING_BYTES = 16 * 1024 * 1024
HTML_TYPE = "text/html; charset=utf-8"
#: How long at most an Archive folder's 404 is trusted while its package's PACKAGES entry is
#: unchanged (every remembered 404 is asked again when a new period begins).
MISSING_RECHECK = timedelta(days=7)


class CranFormat(RepositoryFormat):
    kind = "cran"
    label = "standard R"
    capabilities = FormatCapabilities(
        # `src/contrib/...` and the alternative base URL `cran/` of every R channel.
        reserved_subchannel_names=frozenset({"src", CRAN_PREFIX.rstrip("/")}),
        renders_units_alone=True,
        # MD5sum is what R repositories give; a sha256 beside it is checked too.
        checks_every_digest=True,
        filters_files=True,
    )
    options_help = (
        '{"packages": ["ggplot2", "dplyr (>= 1.1)"], "exclude": ["Rcpp (< 1.0)"], '
        '"licenses": ["MIT", "GPL"], "r_version": "4.4.1", "latest": 2, "dependencies": true, '
        '"archive": false}'
    )

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The mirror filters (see `cran_filters`), validated."""
        return cran_filters.clean(options or {})

    def filter_files(
        self, options: Mapping[str, Any], files: Iterable[tuple[str, str, str, str, Mapping]]
    ) -> dict[str, str] | None:
        """The mirror filters (`cran_filters`)."""
        return cran_filters.decide(
            options,
            (
                cran_filters.RFile(key, unit, filename, version, document)
                for key, unit, filename, version, document in files
            ),
        )

    # --- Units ------------------------------------------------------------------------------

    def list_units(
        self,
        client: Client,
        source_url: str,
        options: Mapping[str, Any],
        documents: Documents | None = None,
    ) -> UnitList | None:
        """`src/contrib` and with `archive` the mirrored packages' Archive folders, only
        guessed (most packages have none).

        Without `archive`, `src/contrib` has no serial: it is asked for (conditionally) on
        every run. With it, PACKAGES is read here, conditionally within one `MISSING_RECHECK`
        period (None when it is unchanged, a 304), and `src/contrib` has the validators of
        what was read as serial: not asked for a second time while PACKAGES stays the same.
        An Archive folder's serial is a digest of its package's PACKAGES entries and the
        current period: a remembered 404 holds while both are the same (a new version may
        move the old one there; a mirror upstream may sync PACKAGES before the folder)."""
        units: dict[str, int | None] = {CONTRIB: None}
        if not options.get("archive"):
            return UnitList(units)
        now = datetime.now(UTC)
        base = contrib_url(source_url)
        with tempfile.TemporaryFile() as index:
            fetched = fetch_document(
                documents,
                "PACKAGES",
                lambda kept: _fetch_packages(client, base, index, kept),
                tag=str(_period(now)),  # a new period asks the remembered 404s again
            )
            if fetched.status == "unchanged":
                return None
            entries, current = self._package_entries(index, fetched.url)
        units[CONTRIB] = _version_serial(fetched.validators)
        for name in sorted(cran_filters.archived_names(options, current)):
            units[archive_unit(name)] = archive_serial(name, entries[name], now)
        return UnitList(units, guessed=[unit for unit in units if unit != CONTRIB])

    def requested_names(self, options: Mapping[str, Any]) -> list[str]:
        """The packages of the package list (`packages`)."""
        return cran_filters.package_names(options)

    def probe_source(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> list[str]:
        """A CRAN-like repository has `src/contrib/PACKAGES.gz` or `src/contrib/PACKAGES`."""
        found = []
        for name in INDEX_FILES:
            peek = client.peek(contrib_url(source_url) + name)
            head = peek.head.lstrip()
            if peek.status == 200 and (
                head.startswith(b"\x1f\x8b") or head.startswith(b"Package:")
            ):
                return []
            found.append(
                f"{name}: {'not an index' if peek.status == 200 else f'HTTP {peek.status}'}"
            )
        return [
            "The source does not look like a CRAN-like repository: it has no "
            f"src/contrib/PACKAGES.gz or src/contrib/PACKAGES ({'; '.join(found)})."
        ]

    def _package_entries(
        self, index: BinaryIO, url: str
    ) -> tuple[dict[str, list[int]], dict[str, Mapping[str, Any]]]:
        """Package name -> digests of its stanzas in the source's PACKAGES, and name -> its
        (last) stanza's fields, by which the filters judge it."""
        entries: dict[str, list[int]] = {}
        current: dict[str, Mapping[str, Any]] = {}
        for item in self.parse_unit(index, url, CONTRIB):
            if isinstance(item, PackageRecord):
                entries.setdefault(item.name, []).append(item.entry_digest)
                current[item.name] = item.extra
        return entries, current

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
            fetched = _fetch_packages(client, base, dest, validators)
            return Fetched(fetched.status, fetched.url, fetched.validators)
        package = archived_package(unit)
        if package is None:
            raise FormatError(unit, "not an index unit of a CRAN-like repository")
        url = f"{base}Archive/{quote(package)}/"
        limit = min(client.max_bytes, MAX_LISTING_BYTES)
        fetched = client.fetch_index(url, dest, validators, max_bytes=limit)
        if fetched.status == "missing":
            # Most packages were never updated, so have no folder: remembered as missing
            # while its serial (see `archive_serial`) stays the same.
            return Fetched("missing", url, keep_serial=True)
        # A folder that exists is asked for on every run (a 304 when unchanged): upstream may
        # add to it without PACKAGES saying so.
        return Fetched(fetched.status, url, fetched.validators, keep_serial=False)

    def parse_unit(
        self,
        fileobj: BinaryIO,
        url: str,
        unit: str,
        stored: StoredEntries | None = None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """One record per stanza of PACKAGES (or file of an archive listing).

        PACKAGES is checked as a whole first (an HTML page or a file without one readable
        stanza fails the unit instead of emptying the channel); then stanzas stream one at a
        time, each checked on its own.
        """
        fileobj.seek(0)
        if unit == CONTRIB:
            check_packages_file(fileobj, url)
            fileobj.seek(0)
            items: Iterator[PackageRecord | Rejected] = packages_records(fileobj, url)
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
                elif stored is not None and stored.is_current(item.filename, item.entry_digest):
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
            render_packages(source.documents(CONTRIB), emit)
        archived = sorted(u for u in listed if archived_package(u))
        for unit in archived if units is None else [u for u in archived if u in units]:
            files = [filename for filename, _ in source.documents(unit)]
            if files:
                with emit(f"{unit}/index.html", HTML_TYPE) as out:
                    out.write(render_listing(unit, files))
        if archived and (units is None or any(archived_package(u) for u in units)):
            render_archive_rds(source.files(archived), emit)

    def withdraw(
        self, index: PublishedIndex, files: Mapping[str, set[str]], emit: Emit
    ) -> set[str]:
        """PACKAGES (with PACKAGES.gz and PACKAGES.rds) without the stanzas of the files, and
        the archive folders' listings and Meta/archive.rds without the archived ones. An R
        file that cannot be remade (no Rscript) is dropped: R reads the next one."""
        replaced: set[str] = set()
        published = index.open(f"{CONTRIB}/PACKAGES") if CONTRIB in files else None
        if published is not None:
            with published:
                if withdraw_packages(published, files[CONTRIB], emit):
                    replaced.update(self.unit_paths(CONTRIB))
        archived: list[str] = []  # `<package>/<tarball>`, as Meta/archive.rds names them
        for unit, filenames in sorted(files.items()):
            package = archived_package(unit)
            published = index.open(f"{unit}/index.html") if package else None
            if published is None:
                continue
            with published:
                page, removed = withdraw_listing(unit, published.read(), filenames)
            if removed:
                with emit(f"{unit}/index.html", HTML_TYPE) as out:
                    out.write(page)
                replaced.add(f"{unit}/index.html")
                archived.extend(f"{package}/{filename}" for filename in removed)
        published = index.open(META_ARCHIVE) if archived else None
        if published is not None:
            with published:
                withdraw_archive_rds(published, archived, emit)
            replaced.add(META_ARCHIVE)
        return replaced

    def index_request(self, path: str, accept: str | None) -> IndexRequest | None:
        """The `cran/` base URL serves the same files; an archive folder serves its listing."""
        inner = path.removeprefix(CRAN_PREFIX)
        prefix = path[: len(path) - len(inner)]
        if inner.startswith(ARCHIVE):
            rest = inner[len(ARCHIVE) :]
            if NAME.fullmatch(rest):
                return IndexRequest(redirect=f"{prefix}{inner}/")
            if rest.endswith("/") and NAME.fullmatch(rest[:-1]):
                return IndexRequest(path=f"{inner}index.html")
        return IndexRequest(path=inner) if prefix and inner else None

    def locate(self, path: str) -> tuple[str, str] | None:
        """(unit, filename) of `src/contrib/<tarball>` or `src/contrib/Archive/<pkg>/<tarball>`."""
        unit, _, filename = path.removeprefix(CRAN_PREFIX).rpartition("/")
        match = TARBALL.fullmatch(filename)
        if match is None:
            return None
        if unit == CONTRIB or archived_package(unit) == match[1]:
            return unit, filename
        return None

    def names_a_file(self, query: str) -> bool:
        """A source package's `<Package>_<Version>.tar.gz`."""
        return TARBALL.fullmatch(query) is not None


# --- Names, versions, paths -------------------------------------------------------------------


def archive_unit(package: str) -> str:
    return f"{ARCHIVE}{package}"


def archive_serial(package: str, entries: Iterable[int], now: datetime) -> int:
    """The serial of `package`'s Archive folder: its PACKAGES entries' digests and the
    `MISSING_RECHECK` period `now` is in."""
    return entry_digest(orjson.dumps([_period(now), sorted(entries)]), package)


def contrib_url(source_url: str) -> str:
    """`<source>/src/contrib/` of a CRAN-like base URL."""
    return source_url.rstrip("/") + "/src/contrib/"


def _fetch_packages(
    client: Client, base: str, dest: BinaryIO, validators: Mapping[str, str]
) -> IndexFetch:
    """PACKAGES.gz (decompressed) or PACKAGES of the `src/contrib/` at `base` into `dest`."""

    def unpack(url: str, raw: BinaryIO, out: BinaryIO) -> None:
        _gunzip(raw, out, url, client.max_bytes)

    candidates = [(base + name, unpack if name.endswith(".gz") else None) for name in INDEX_FILES]
    fetched = fetch_first(client, candidates, dest, validators)
    if fetched is None:
        raise FormatError(
            base + "PACKAGES", "no PACKAGES index (neither PACKAGES.gz nor PACKAGES exists)"
        )
    return fetched


def _version_serial(validators: Mapping[str, str]) -> int | None:
    """A serial of the PACKAGES version `validators` name (None when upstream names none)."""
    version = [
        (key, validators[key]) for key in ("url", "etag", "last_modified") if key in validators
    ]
    if len(version) < 2:
        return None
    return entry_digest(orjson.dumps(version), CONTRIB)


def _period(now: datetime) -> int:
    """The `MISSING_RECHECK` period `now` is in."""
    return int(now.timestamp() // MISSING_RECHECK.total_seconds())


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

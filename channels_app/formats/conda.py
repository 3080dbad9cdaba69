"""conda channels: subdirs, repodata.json and package records."""

from __future__ import annotations

import bz2
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin

import ijson
import orjson
import zstandard
from rattler import MatchSpec
from rattler import PackageRecord as RattlerRecord
from rattler.package.build_string import BuildString

from .base import (
    Client,
    Documents,
    Emit,
    Fetched,
    FormatError,
    IndexSource,
    IsCurrent,
    OptionsError,
    PackageRecord,
    Rejected,
    RepositoryFormat,
    Unchanged,
    UnitExtras,
    UnitList,
    entry_digest,
    fetch_document,
    fetch_first,
)

#: Platforms a conda channel may have (conda's known subdirs).
KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "emscripten-wasm32",
        "freebsd-64",
        "linux-32",
        "linux-64",
        "linux-aarch64",
        "linux-armv6l",
        "linux-armv7l",
        "linux-ppc64",
        "linux-ppc64le",
        "linux-riscv64",
        "linux-s390x",
        "osx-64",
        "osx-arm64",
        "wasi-wasm32",
        "win-32",
        "win-64",
        "win-arm64",
        "zos-z",
    }
)
#: Used when the mirror names no subdirs and the source has no channeldata.json.
DEFAULT_SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")


class CondaFormat(RepositoryFormat):
    kind = "conda"
    label = "conda"
    source_help = (
        "A conda channel, e.g. https://conda.anaconda.org/conda-forge; another PSM channel: "
        "https://<host>/api/repo/<channel>; a token in the path is kept private."
    )
    options_help = '{"subdirs": ["linux-64", "osx-arm64"]}'

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        options = dict(options or {})
        subdirs = options.pop("subdirs", None)
        if options:
            raise OptionsError(f"unknown conda mirror options: {', '.join(sorted(options))}")
        if subdirs is None:
            return {}
        if not isinstance(subdirs, list) or not all(isinstance(s, str) for s in subdirs):
            raise OptionsError("subdirs must be a list of platform names")
        unknown = sorted(set(subdirs) - KNOWN_SUBDIRS)
        if unknown:
            raise OptionsError(f"unknown platform(s): {', '.join(unknown)}")
        # noarch is always mirrored: platform packages depend on it.
        return {"subdirs": sorted(set(subdirs) | {"noarch"})}

    def subdirs(self, client: Client, source_url: str, options: Mapping[str, Any]) -> list[str]:
        """The subdirs to mirror: the option, else what channeldata.json lists, else defaults."""
        return sorted(self.list_units(client, source_url, options) or ())

    def probe_source(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> list[str]:
        """A conda channel has channeldata.json or at least noarch/repodata.json (JSON)."""
        found = []
        for name in ("channeldata.json", "noarch/repodata.json"):
            peek = client.peek(_join(source_url, name))
            if peek.status == 200 and peek.head.lstrip()[:1] == b"{":
                return []
            found.append(f"{name}: {'not JSON' if peek.status == 200 else f'HTTP {peek.status}'}")
        return [
            "The source does not look like a conda channel: it has neither channeldata.json "
            f"nor noarch/repodata.json ({'; '.join(found)})."
        ]

    fixed_units = KNOWN_SUBDIRS
    reserved_subchannel_names = KNOWN_SUBDIRS
    lists_empty_units = True

    def index_units(self, client: Client, source_url: str, options: Mapping[str, Any]) -> list[str]:
        return self.subdirs(client, source_url, options)

    def list_units(
        self,
        client: Client,
        source_url: str,
        options: Mapping[str, Any],
        documents: Documents | None = None,
    ) -> UnitList | None:
        """The subdirs (see `subdirs`); None when channeldata.json is unchanged (a 304). The
        defaults are only guessed, except noarch, which every conda channel has (clients need
        its repodata.json)."""
        if options.get("subdirs"):
            return UnitList(dict.fromkeys(sorted(set(options["subdirs"]) | {"noarch"})))
        url = _join(source_url, "channeldata.json")
        with tempfile.TemporaryFile() as body:
            fetched = fetch_document(
                documents, "channeldata.json", lambda kept: client.fetch_index(url, body, kept)
            )
            if fetched.status == "unchanged":
                return None
            listed: list[str] = []
            if fetched.status == "changed":
                try:
                    document = json.loads(body.read())
                    listed = [s for s in document.get("subdirs", []) if s in KNOWN_SUBDIRS]
                except (ValueError, AttributeError, TypeError):
                    listed = []  # a broken channeldata.json only costs us the hint
        subdirs = sorted(set(listed or DEFAULT_SUBDIRS) | {"noarch"})
        guessed = () if listed else set(DEFAULT_SUBDIRS) - {"noarch"}
        return UnitList(dict.fromkeys(subdirs), guessed)

    def fetch_unit(
        self,
        client: Client,
        source_url: str,
        unit: str,
        dest: BinaryIO,
        validators: Mapping[str, str],
    ) -> Fetched:
        """Fetch `<subdir>/repodata.json`, preferring `.zst`, then plain, then `.bz2`.

        Conditional on the validators of the same URL, which is asked first, so an unchanged
        subdir costs one 304. The decompressed document is capped at the client's index size
        limit.
        """

        def unpack(url: str, raw: BinaryIO, out: BinaryIO) -> None:
            _decompress(url, raw, out, url, client.max_bytes)

        candidates = [
            (_join(source_url, f"{unit}/{name}"), None if name == "repodata.json" else unpack)
            for name in REPODATA_FILES
        ]
        fetched = fetch_first(client, candidates, dest, validators)
        if fetched is None:
            return Fetched("missing", _join(source_url, f"{unit}/repodata.json"))
        return Fetched(fetched.status, fetched.url, fetched.validators)

    def parse_unit(
        self,
        fileobj: BinaryIO,
        url: str,
        unit: str,
        is_current: IsCurrent | None = None,
        current: Callable[[], Mapping[str, int]] | None = None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """Stream the records of a subdir's repodata.json, section by section.

        First the whole document is read once to check it (a truncated or malformed one fails
        before any record is yielded) and to find `removed` and the top-level keys PSM does not
        know, yielded as UnitExtras (keys left out come as Rejected: `_extra_keys`). Then each
        section is a streaming pass (ijson's C backend), so memory stays at one record whatever
        the document's size. Entries are digested as parsed, before any check: on a re-sync
        almost every entry is current and costs little more than parsing.

        A large subdir uses the second core: a child process checks the document while this
        one asks `current` for the stored digests; on a re-sync (many stored) the child then
        scans `packages.conda` while this process scans `packages`.
        """
        fileobj.seek(0)
        if not fileobj.read(4096).lstrip().startswith(b"{"):
            raise FormatError(url, "repodata must be a JSON object")
        info = _first(fileobj, "info", url)
        if info is not None and not isinstance(info, dict):
            raise FormatError(f"{url} [info]", "must be an object")
        base = _base_url(url, (info or {}).get("base_url"))
        child = _start_child(fileobj, url, base) if current is not None else None
        if child is not None:
            yield from _parallel(fileobj, url, unit, base, is_current, current, child)
            return
        yield from _document_items(*_check_document(fileobj, url))
        for section, suffix in SECTIONS:
            yield from _scan(fileobj, url, unit, base, section, suffix, is_current)

    def render_index(self, source: IndexSource, emit: Emit, units: set[str] | None = None) -> None:
        """Write `<subdir>/repodata.json` (+ `.zst`) for every subdir and `channeldata.json`.

        `noarch` is always present. `base_url` is never written: package URLs are relative to
        the repodata, so clients always come back to PSM.
        """
        subdirs = sorted(set(source.units()) | {"noarch"})
        names: dict[str, set[str]] = {}
        for subdir in subdirs:
            with (
                emit(f"{subdir}/repodata.json", "application/json") as plain,
                emit(f"{subdir}/repodata.json.zst", "application/zstd") as packed,
            ):
                compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
                with compressor.stream_writer(packed, closefd=False) as zst:
                    out = _Buffered((plain, zst))
                    _write_repodata(out, subdir, source, names)
                    out.flush()
        channeldata = {
            "channeldata_version": 1,
            "packages": {name: {"subdirs": sorted(s)} for name, s in sorted(names.items())},
            "subdirs": subdirs,
        }
        with emit("channeldata.json", "application/json") as out:
            out.write(orjson.dumps(channeldata, option=orjson.OPT_INDENT_2))


#: An index this large is checked by a child process, in parallel with the database read.
PARALLEL_BYTES = 16 * 1024 * 1024


def parse_match_spec(text: str) -> MatchSpec:
    """A conda MatchSpec (py-rattler's parser); ValueError says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty MatchSpec")
    try:
        spec = MatchSpec(text.strip())
    except Exception as exc:  # rattler raises its own error types
        raise ValueError(str(exc).strip() or "not a MatchSpec") from None
    if spec.name is None:
        raise ValueError("a package name is required")
    return spec


def rattler_record(record: Mapping[str, Any]) -> RattlerRecord:
    """A py-rattler PackageRecord of a repodata entry, for MatchSpec matching."""
    return RattlerRecord(
        name=record["name"],
        version=record["version"],
        build=BuildString(str(record.get("build", ""))),
        build_number=int(record.get("build_number") or 0),
        subdir=str(record.get("subdir") or "noarch"),
        depends=list(record.get("depends") or []),
        license=record.get("license") if isinstance(record.get("license"), str) else None,
    )


#: A re-sync of a subdir with this many stored records also scans its sections in parallel.
PARALLEL_FROM = 50_000
#: Index files of a subdir, most preferred first.
REPODATA_FILES = ("repodata.json.zst", "repodata.json", "repodata.json.bz2")
#: repodata sections and the package file suffix each holds.
SECTIONS = (("packages", ".tar.bz2"), ("packages.conda", ".conda"))
#: Top-level keys PSM reads, or writes itself when it renders a subdir's repodata.
KNOWN_KEYS = frozenset(
    {"info", *(section for section, _ in SECTIONS), "removed", "repodata_version"}
)
#: Other top-level keys (`signatures`, a key a future conda adds) are served back verbatim, up
#: to this much compact JSON per subdir; what is past it, or nested deeper than
#: EXTRA_KEYS_DEPTH, is left out and reported on the run (a hostile upstream's huge key is
#: never held in memory or in the channel's row).
EXTRA_KEYS_BYTES = 1024 * 1024
EXTRA_KEYS_DEPTH = 32
#: Fields that, beside `name` and `version`, make an object a package record.
RECORD_FIELDS = frozenset({"build", "depends", "fn", "md5", "sha256", "subdir", "url"})
SECTION_LEFT_OUT = "package section not mirrored (its records are not checked or filtered)"
PARSE_BUFFER = 1 << 20
ZSTD_LEVEL = 3  # fast; publishing a conda-forge-sized subdir stays a few seconds


_MISSING = object()


def _first(fileobj: BinaryIO, prefix: str, url: str, missing: Any = None) -> Any:
    """The first value at `prefix`; stops reading as soon as it is found (info comes first)."""
    fileobj.seek(0)
    try:
        items = ijson.items(fileobj, prefix, use_float=True, buf_size=PARSE_BUFFER)
        return next(items, missing)
    except ijson.JSONError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None


class _Counted:
    """A JSON object counted, not kept: the check reads a whole repodata for its top-level keys
    holding no more than one record in memory."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.entries += 1


def _check_document(fileobj: BinaryIO, url: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Read the whole document (that is the check); return the extras to keep, `removed` and
    `top_level` (unknown keys as compact JSON), and the (key, reason) of keys left out."""
    fileobj.seek(0)
    removed, unknown = None, {}
    try:
        # Read to the end even after `removed` is found: that is the check.
        items = ijson.kvitems(fileobj, "", map_type=_Counted, use_float=True, buf_size=PARSE_BUFFER)
        for key, value in items:
            if key == "removed":
                removed = value if removed is None else removed
            elif key not in KNOWN_KEYS:
                unknown.setdefault(key, value)  # the first of duplicates, as for the others
    except ijson.JSONError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None
    extras: dict[str, Any] = {}
    if removed is not None:
        if not isinstance(removed, list) or not all(_safe_filename(f) for f in removed):
            raise FormatError(f"{url} [removed]", "must be a list of package file names")
        extras["removed"] = removed
    kept, left_out = _extra_keys(fileobj, unknown)
    if kept:
        extras["top_level"] = kept
    return extras, left_out


def _holds_packages(key: str) -> bool:
    """Whether a top-level key is a package section PSM does not parse: `v3` (the experimental
    repodata v3, whose `conda`, `tar.bz2` and `whl` sections rattler already installs from,
    wheels by absolute URLs to PyPI), a later `v<N>`, or another `packages.*` (the earlier
    `packages.whl`).

    A mirror that gates packages cannot pass these on: their records would reach clients
    without PSM's checks, policy and filters, and could send them around PSM. Nor does PSM
    parse them (yet): the CEPs are drafts, section keys are not file names, and a record
    would have to keep its section through storage and rendering. So they are left out:
    clients that read v3 still find every package PSM allows in `packages` and
    `packages.conda`."""
    return key.startswith("packages.") or re.fullmatch(r"v[0-9]+", key) is not None


def _extra_keys(
    fileobj: BinaryIO, unknown: Mapping[str, Any]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Of the unknown top-level keys (values from the check: objects only counted), those kept
    as compact JSON, in document order within EXTRA_KEYS_BYTES, and those left out, with why."""
    left_out: list[tuple[str, str]] = []
    candidates: dict[str, Any] = {}
    for key, value in unknown.items():
        if not _is_text(key, 255):
            left_out.append((repr(key)[:255], "top-level key without a plain-text name"))
        elif _holds_packages(key):
            if not isinstance(value, _Counted) or value.entries:  # `{}`: nothing is lost
                left_out.append((key, SECTION_LEFT_OUT))
        else:
            candidates[key] = value
    # Objects and arrays are read again, these keys only, built within the budget (a rare
    # pass, in Python: conda-forge's repodata has no such key but an empty `v3`).
    for key, value in candidates.items():
        if isinstance(value, _Counted) and not value.entries:
            candidates[key] = {}
    structured = {k for k, v in candidates.items() if isinstance(v, _Counted | list)}
    values, problems = _read_values(fileobj, structured) if structured else ({}, {})
    kept: dict[str, str] = {}
    used = 0
    for key, value in candidates.items():
        if key in problems:
            left_out.append((key, problems[key]))
            continue
        value = values[key] if key in structured else value
        if _has_records(value):
            left_out.append((key, "unknown top-level key holding package records"))
            continue
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # e.g. an integer past 64 bits
            left_out.append((key, "unknown top-level key PSM cannot represent"))
            continue
        if used + len(text) > EXTRA_KEYS_BYTES:
            left_out.append((key, _over_budget()))
            continue
        kept[key], used = text, used + len(text)
    return kept, left_out


def _over_budget() -> str:
    return f"unknown top-level keys past {EXTRA_KEYS_BYTES // 1024} KiB"


def _read_values(fileobj: BinaryIO, keys: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of the top-level `keys`, built event by event while they stay within
    EXTRA_KEYS_BYTES together and EXTRA_KEYS_DEPTH levels deep; (values, key -> why not)."""
    fileobj.seek(0)
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    depth = used = size = 0
    key, builder = "", None
    for event, value in ijson.basic_parse(fileobj, use_float=True, buf_size=PARSE_BUFFER):
        if depth == 1 and event == "map_key":
            key, size = value, 0
            wanted = key in keys and key not in values and key not in problems
            builder = ijson.ObjectBuilder() if wanted else None
            continue
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if builder is None:
            continue
        size += len(value) + 3 if isinstance(value, str) else 8
        if used + size > EXTRA_KEYS_BYTES:
            problems[key], builder = _over_budget(), None
        elif depth > EXTRA_KEYS_DEPTH:
            problems[key], builder = "unknown top-level key nested too deeply", None
        else:
            builder.event(event, value)
            if depth == 1:  # the value is complete
                values[key], builder, used = builder.value, None, used + size
    return values, problems


def _has_records(value: Any) -> bool:
    """Whether a value holds something shaped like a package record, at any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if (
                isinstance(item.get("name"), str)
                and "version" in item
                and item.keys() & RECORD_FIELDS
            ):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _document_items(
    extras: dict[str, Any], left_out: list[tuple[str, str]]
) -> Iterator[UnitExtras | Rejected]:
    """What the check found: the extras to keep, then each key left out (counted on the run)."""
    yield UnitExtras(extras)
    for key, reason in left_out:
        yield Rejected(key, reason)


def _entries(fileobj: BinaryIO, url: str, section: str) -> Iterator[tuple[Any, Any]]:
    """(filename, record) of one section; a section of the wrong shape is an error."""
    fileobj.seek(0)
    entries = 0
    try:
        for entry in ijson.kvitems(fileobj, section, use_float=True, buf_size=PARSE_BUFFER):
            entries += 1
            yield entry
    except ijson.JSONError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None
    if not entries:
        # A section of the wrong shape reads as empty, which would remove every package;
        # tell it apart (costs a pass only for an empty section).
        value = _first(fileobj, section, url, missing=_MISSING)
        if value is not _MISSING and not isinstance(value, dict):
            raise FormatError(f"{url} [{section}]", "must be an object of file name to record")


def _scan(
    fileobj: BinaryIO,
    url: str,
    unit: str,
    base: str,
    section: str,
    suffix: str,
    is_current: IsCurrent | None,
) -> Iterator[PackageRecord | Rejected | Unchanged]:
    for filename, record in _entries(fileobj, url, section):
        raw = orjson.dumps(record)
        digest = entry_digest(raw, base)
        if is_current is not None and is_current(filename, digest):
            yield Unchanged(filename)
        else:
            yield _record(section, suffix, filename, record, unit, base, raw, digest)


def _start_child(fileobj: BinaryIO, url: str, base: str) -> subprocess.Popen | None:
    """Start the child that checks the document (see `_child_main`); None if the document is
    small, has no path, or the child cannot start (the caller then works alone)."""
    path = getattr(fileobj, "name", None)
    if not isinstance(path, str) or not os.path.exists(path):
        return None
    if os.path.getsize(path) < PARALLEL_BYTES:
        return None
    # A plain subprocess, not multiprocessing: Celery's pool processes may not have children.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = "from channels_app.formats.conda import _child_main; _child_main()"
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        pickle.dump((path, url, base, SECTIONS[1][0]), child.stdin, protocol=5)
        child.stdin.flush()
    except OSError:
        return None
    return child


def _child_main() -> None:
    """The child: check the document, then, given the stored digests of the second section,
    digest it and send back what is unchanged and what changed (records only for those)."""
    path, url, base, section = pickle.load(sys.stdin.buffer)
    try:
        with open(path, "rb") as fileobj:
            checked = _check_document(fileobj, url)
            known = pickle.load(sys.stdin.buffer)  # None: the parent scans everything itself
            unchanged, changed = [], []
            if known is not None:
                for filename, record in _entries(fileobj, url, section):
                    raw = orjson.dumps(record)
                    digest = entry_digest(raw, base)
                    if known.get(filename) == digest:
                        unchanged.append((filename, digest))
                    else:
                        changed.append((filename, record, raw, digest))
        result: tuple = ("ok", checked, unchanged, changed)
    except FormatError as exc:
        result = ("error", exc.where, exc.reason)
    pickle.dump(result, sys.stdout.buffer, protocol=5)


def _parallel(
    fileobj: BinaryIO,
    url: str,
    unit: str,
    base: str,
    is_current: IsCurrent | None,
    current: Callable[[], Mapping[str, int]],
    child: subprocess.Popen,
) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
    first: list = []
    output = b""
    try:
        stored = current()  # the database read overlaps the child's check
        split = len(stored) >= PARALLEL_FROM
        suffix = SECTIONS[1][1]
        known = {f: d for f, d in stored.items() if f.endswith(suffix)} if split else None
        pickle.dump(known, child.stdin, protocol=5)
        child.stdin.close()
        if split:
            # Kept back until the child has checked the whole document.
            first = list(_scan(fileobj, url, unit, base, *SECTIONS[0], is_current))
        output = child.stdout.read()
    except OSError:
        pass  # the child died; its work is done here below
    finally:
        if not child.stdin.closed:
            child.stdin.close()  # unblocks a child still waiting for the digests
        child.stdout.close()
        if child.wait() != 0:
            output = b""
    if not output:
        yield from _document_items(*_check_document(fileobj, url))
        yield from first or _scan(fileobj, url, unit, base, *SECTIONS[0], is_current)
        yield from _scan(fileobj, url, unit, base, *SECTIONS[1], is_current)
        return
    result = pickle.loads(output)
    if result[0] == "error":
        raise FormatError(result[1], result[2])
    _, checked, unchanged, changed = result
    yield from _document_items(*checked)
    if not split:
        for section, suffix in SECTIONS:
            yield from _scan(fileobj, url, unit, base, section, suffix, is_current)
        return
    yield from first
    section, suffix = SECTIONS[1]
    for filename, digest in unchanged:
        if is_current is not None:
            is_current(filename, digest)  # marks it seen
        yield Unchanged(filename)
    for filename, record, raw, digest in changed:
        yield _record(section, suffix, filename, record, unit, base, raw, digest)


def _base_url(repodata_url: str, base_url: Any) -> str:
    """Where the subdir's package files live upstream (repodata v2 `base_url`, else beside it)."""
    here = repodata_url.rsplit("/", 1)[0] + "/"
    if isinstance(base_url, str) and base_url:
        return urljoin(here, base_url.rstrip("/") + "/")
    return here


#: What a conda file name may contain: no separators, no spaces, no leading dot, no `%`.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!~=,-]{0,254}")
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")  # needs no quoting in a URL (`+` would, on S3)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")


def _safe_filename(filename: Any) -> bool:
    return (
        isinstance(filename, str)
        and _SAFE_FILENAME.fullmatch(filename) is not None
        and ".." not in filename
    )


def _record(
    section: str,
    suffix: str,
    filename: Any,
    record: Any,
    subdir: str,
    base: str,
    raw: bytes,
    digest: int,
) -> PackageRecord | Rejected:
    """Check one repodata entry and turn it into a PackageRecord (or say why not)."""
    if not _safe_filename(filename):
        return Rejected(str(filename)[:255], "unsafe file name")
    if not filename.endswith(suffix):
        return Rejected(filename, f"file name does not end in {suffix} (section {section})")
    if not isinstance(record, dict):
        return Rejected(filename, "record is not an object")
    name, version = record.get("name"), record.get("version")
    if not _is_text(name, 255) or not _is_text(version, 100):
        return Rejected(filename, "record lacks a valid name or version")
    if not filename.startswith(name) or filename[len(name) : len(name) + 1] != "-":
        return Rejected(filename, "file name does not match the package name")
    if record.get("subdir", subdir) != subdir:
        return Rejected(filename, f"record is for subdir {record.get('subdir')!r}")
    sha256, md5, size = record.get("sha256"), record.get("md5"), record.get("size")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        return Rejected(filename, "malformed sha256")
    if md5 is not None and not (isinstance(md5, str) and _MD5.fullmatch(md5)):
        return Rejected(filename, "malformed md5")
    if not sha256 and not md5:
        return Rejected(filename, "no sha256 or md5 to verify the file with")
    if size is not None and (type(size) is not int or size < 0):
        return Rejected(filename, "malformed size")
    depends = record.get("depends", [])
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        return Rejected(filename, "malformed depends")
    # An absolute per-record URL would send clients around PSM: keep it only as our source.
    url = record.pop("url", None)
    if url is not None:
        raw = orjson.dumps(record)
    absolute = isinstance(url, str) and url.startswith(("http://", "https://"))
    upstream = url if absolute and _is_text(url, 2000) and " " not in url else ""
    return PackageRecord(
        name=name,
        version=version,
        filename=filename,
        subdir=subdir,
        url=upstream or base + (filename if _PLAIN.fullmatch(filename) else quote(filename)),
        sha256=sha256.lower() if sha256 else None,
        md5=md5.lower() if md5 else None,
        size=size,
        depends=tuple(depends),
        license=record.get("license") if isinstance(record.get("license"), str) else None,
        extra=record,
        document=raw.decode(),
        digest=digest,
    )


def _is_text(value: Any, max_length: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable()


def _decompress(name: str, raw: BinaryIO, dest: BinaryIO, url: str, limit: int) -> None:
    """Decompress `raw` into `dest`, refusing more than `limit` bytes (a decompression bomb)."""
    if name.endswith(".zst"):
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        errors: tuple[type[Exception], ...] = (zstandard.ZstdError,)
    else:
        reader = bz2.BZ2File(raw)
        errors = (OSError, EOFError, ValueError)
    total = 0
    try:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise FormatError(url, f"decompresses to more than the {limit} byte limit")
            dest.write(chunk)
    except errors as exc:
        raise FormatError(url, f"corrupt compressed data: {exc}") from None


class _Buffered:
    """Collect small writes and pass them on in ~1 MiB blocks to every target."""

    def __init__(self, targets: tuple[Any, ...]) -> None:
        self.targets, self.parts, self.size = targets, [], 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        block = b"".join(self.parts)
        for target in self.targets:
            target.write(block)
        self.parts, self.size = [], 0


def _write_repodata(
    out: _Buffered, subdir: str, source: IndexSource, names: dict[str, set[str]]
) -> None:
    out.write(b'{"info":' + orjson.dumps({"subdir": subdir}))
    for section, suffix in SECTIONS:
        out.write(b',"' + section.encode() + b'":{')
        first = True
        for filename, document in source.documents(subdir, suffix):
            raw = document if isinstance(document, bytes) else document.encode()
            out.write((b"" if first else b",") + orjson.dumps(filename) + b":" + raw)
            first = False
            names.setdefault(filename.rsplit("-", 2)[0], set()).add(subdir)
        out.write(b"}")
    extras = source.unit_extras(subdir)
    removed = sorted(set(extras.get("removed", ())))
    out.write(b',"removed":' + orjson.dumps(removed))
    for key, text in sorted(extras.get("top_level", {}).items()):
        # Served back as read; never in place of what PSM writes, nor a package section.
        if key not in KNOWN_KEYS and not _holds_packages(key):
            out.write(b"," + orjson.dumps(key) + b":" + text.encode())
    out.write(b',"repodata_version":1}')


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"

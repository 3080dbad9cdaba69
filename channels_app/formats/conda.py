"""conda channels: the format (options, subdirs, fetching) and conda's names and specs.

A unit is a subdir (platform). `conda_repodata` reads a subdir's repodata.json (with
`conda_document`, the check of the whole document, and `conda_records`, the check of each
entry); `conda_render` writes a channel's index files.
"""

from __future__ import annotations

import bz2
import datetime as dt
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO

import orjson
from rattler import MatchSpec
from rattler import PackageRecord as RattlerRecord
from rattler.package.build_string import BuildString

from psm.http import UpstreamError

try:
    from compression.zstd import ZstdError, ZstdFile
except ImportError:  # before Python 3.14
    from backports.zstd import ZstdError, ZstdFile

from . import conda_jlap as jlap
from .base import (
    Client,
    Documents,
    Emit,
    Fetched,
    FormatCapabilities,
    FormatError,
    IndexSource,
    OptionsError,
    PackageRecord,
    PatchedEntries,
    PublishedIndex,
    Rejected,
    RepositoryFormat,
    StoredEntries,
    Unchanged,
    UnitExtras,
    UnitList,
    fetch_document,
    fetch_first,
)
from .conda_records import SUFFIXES, file_url
from .conda_records import base_url as conda_base_url
from .conda_render import render_channel, withdraw_channel
from .conda_repodata import SubdirFile, read_entries, read_repodata

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
#: Index files of a subdir, most preferred first.
REPODATA_FILES = ("repodata.json.zst", "repodata.json", "repodata.json.bz2")


class CondaFormat(RepositoryFormat):
    kind = "conda"
    label = "conda"
    capabilities = FormatCapabilities(
        fixed_units=KNOWN_SUBDIRS,
        lists_empty_units=True,
        reserved_subchannel_names=KNOWN_SUBDIRS,
        bz2_copies=("/repodata.json",),
        keeps_last_document=True,
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

    def list_units(
        self,
        client: Client,
        source_url: str,
        options: Mapping[str, Any],
        documents: Documents | None = None,
    ) -> UnitList | None:
        """The subdirs to mirror: the option, else what channeldata.json lists, else defaults;
        None when channeldata.json is unchanged (a 304). The defaults are only guessed, except
        noarch, which every conda channel has (clients need its repodata.json)."""
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
        validators: Mapping[str, Any],
    ) -> Fetched:
        """Fetch `<subdir>/repodata.json`, preferring `.zst`, then plain, then `.bz2`.

        Where the last read kept the hash of the document the rows are (`validators["jlap"]`),
        the subdir's repodata.jlap is asked first for the patches since then (see
        `conda_jlap`): their operations go to `dest` (`patched`), none is `unchanged`. If the
        log cannot say, the document is fetched whole, conditionally on the validators of the
        same URL, which is asked first, so an unchanged subdir costs one 304; it is hashed as
        it is written, for the next read to ask the log from there. The decompressed document
        is capped at the client's index size limit.
        """
        url = _join(source_url, f"{unit}/repodata.json")
        log_url = _join(source_url, f"{unit}/{jlap.NAME}")
        kept = validators.get("jlap")
        state: dict[str, Any] = kept if isinstance(kept, dict) else {}
        if jlap.usable(state):
            try:
                steps, state = jlap.patches_since(client, log_url, state)
            except UpstreamError:
                steps = None  # the log is a shortcut: the document says the same
            if steps == []:
                return Fetched("unchanged", url, {**validators, "jlap": state})
            if steps is not None:
                dest.write(
                    orjson.dumps({"from": kept["have"], "to": state["have"], "steps": steps})
                )
                dest.seek(0)
                return Fetched("patched", url, {"jlap": state})

        def unpack(url: str, raw: BinaryIO, out: BinaryIO) -> None:
            _decompress(url, raw, out, url, client.max_bytes)

        candidates = [
            (_join(source_url, f"{unit}/{name}"), None if name == "repodata.json" else unpack)
            for name in REPODATA_FILES
        ]
        if "pos" not in state and not jlap.absent(state):
            # Where the log is, if there is one, before the document is read: the next read
            # asks from there. A 404 is remembered, and the document is then not hashed.
            state = jlap.log_end(client, log_url, state)
        hasher = None if jlap.absent(state) else jlap.document_hash()
        target = dest if hasher is None else _Hashed(dest, hasher)
        if isinstance(dest, SubdirFile):  # the comparison with the kept one starts with a 200
            target = _Begun(target, dest.begun)
        fetched = fetch_first(client, candidates, target, validators)
        if fetched is None:
            return Fetched("missing", url)
        kept_validators: dict[str, Any] = dict(fetched.validators)
        if hasher is not None:
            state = jlap.read_whole(
                state, hasher.hexdigest() if fetched.status == "changed" else None
            )
        if state:
            kept_validators["jlap"] = state
        return Fetched(fetched.status, fetched.url, kept_validators)

    def read_patched(
        self,
        fileobj: BinaryIO,
        url: str,
        base_url: str | None,
        stored_entries: Callable[[Iterable[tuple[str, str]]], Mapping[tuple[str, str], Any]],
    ) -> PatchedEntries | None:
        """The entries a `patched` fetch changes (see `conda_jlap.patched`), None if they
        cannot be worked out here (the caller fetches the whole document). An entry changed
        inside starts from its stored record, given its absolute `url` back (stored as the
        row's upstream URL, not in the record served)."""
        fileobj.seek(0)
        try:
            patch = orjson.loads(fileobj.read())
        except orjson.JSONDecodeError:
            return None
        base = conda_base_url(url, base_url)

        def stored(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
            entries = {}
            for (section, filename), (record, upstream) in stored_entries(keys).items():
                entry = orjson.loads(record)
                if upstream != file_url(base, filename):
                    entry["url"] = upstream
                entries[section, filename] = entry
            return entries

        entries = jlap.patched(patch["steps"], stored)
        return None if entries is None else PatchedEntries(patch["from"], patch["to"], entries)

    def parse_patched(
        self,
        entries: PatchedEntries,
        url: str,
        unit: str,
        stored: StoredEntries,
        base_url: str | None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """The items of the entries a patch changed (see `conda_repodata.read_entries`)."""
        return read_entries(entries.entries, url, unit, stored, base_url)

    def unit_buffer(
        self, kept: str | None = None, begun: Callable[[], None] | None = None
    ) -> BinaryIO:
        """A subdir's document, compared with the `kept` one as it downloads (see
        `conda_repodata.SubdirFile`)."""
        return SubdirFile(kept, begun)  # type: ignore[return-value] - a file, and the comparison

    def parse_unit(
        self, fileobj: BinaryIO, url: str, unit: str, stored: StoredEntries | None = None
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """Stream the records of a subdir's repodata.json (see `conda_repodata`)."""
        return read_repodata(fileobj, url, unit, stored)

    def render_index(self, source: IndexSource, emit: Emit, units: set[str] | None = None) -> None:
        """Write `<subdir>/repodata.json` (+ `.zst`) for every subdir and `channeldata.json`
        (see `conda_render`)."""
        render_channel(source, emit)

    def withdraw(
        self, index: PublishedIndex, files: Mapping[str, set[str]], emit: Emit
    ) -> set[str]:
        """Rewrite the subdirs' repodata.json (+ `.zst`) and channeldata.json where they list
        the files (see `conda_render.withdraw_channel`)."""
        return withdraw_channel(index, files, emit)

    def names_a_file(self, query: str) -> bool:
        """A `.conda` or `.tar.bz2` name."""
        return query.endswith(SUFFIXES)


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


def build_date(record: Mapping[str, Any]) -> dt.date | None:
    """The day a package was built, from its record's `timestamp` (None: not given)."""
    stamp = record.get("timestamp")
    if type(stamp) is int and 0 < stamp < _INT_STAMPS:
        # The same day as below, without a datetime (a first load reads 600,000 of them).
        return dt.date.fromordinal(_EPOCH + stamp // (86_400_000 if stamp > 1e11 else 86_400))
    if not isinstance(stamp, int | float) or stamp <= 0:
        return None
    seconds = stamp / 1000 if stamp > 1e11 else stamp  # conda uses ms; older records s
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date()


def built_between(first: dt.date, last: dt.date) -> Callable[[Mapping[str, Any]], bool]:
    """A test of whether a record's `build_date` is known and from `first` to `last` (both
    included). An integer millisecond timestamp is compared with the bounds' own, without
    making its day (the date rules of a first load ask it of every file); any other the
    long way."""
    # The millisecond stamps `build_date` reads as days from `first` to `last`.
    low = max((first.toordinal() - _EPOCH) * _MS_A_DAY, _MS_STAMPS)
    high = min((last.toordinal() + 1 - _EPOCH) * _MS_A_DAY, _INT_STAMPS)

    def between(record: Mapping[str, Any]) -> bool:
        stamp = record.get("timestamp")
        if type(stamp) is int and low <= stamp < high:
            return True
        day = build_date(record)
        return day is not None and first <= day <= last

    return between


_EPOCH = dt.date(1970, 1, 1).toordinal()
_MS_A_DAY = 86_400_000
#: The smallest integer timestamp `build_date` reads as milliseconds (above 1e11).
_MS_STAMPS = 100_000_000_001
#: Integer timestamps (ms) below this are days `fromtimestamp` can give (up to the year 9999).
_INT_STAMPS = 253_402_300_800_000


def _decompress(name: str, raw: BinaryIO, dest: BinaryIO, url: str, limit: int) -> None:
    """Decompress `raw` into `dest`, refusing more than `limit` bytes (a decompression bomb)."""
    if name.endswith(".zst"):
        # The standard library's reader (a backport before Python 3.14): one frame after
        # another, and EOFError on a stream that ends inside one (python-zstandard's readers
        # hand a truncated stream back as a shorter document).
        reader = ZstdFile(raw)
        errors: tuple[type[Exception], ...] = (ZstdError, EOFError)
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


class _WrittenThrough:
    """A file being written through to `dest`, which a subclass also watches on `write`."""

    def __init__(self, dest: BinaryIO | _WrittenThrough) -> None:
        self.dest = dest

    def write(self, data: bytes) -> int:
        return self.dest.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.dest.seek(offset, whence)

    def flush(self) -> None:
        self.dest.flush()


class _Begun(_WrittenThrough):
    """A file being written that says so (`begun`, given them) before its first bytes (a
    200's body)."""

    def __init__(self, dest: BinaryIO | _WrittenThrough, begun: Callable[[bytes], None]) -> None:
        super().__init__(dest)
        self.begun: Callable[[bytes], None] | None = begun

    def write(self, data: bytes) -> int:
        if self.begun is not None:
            begun, self.begun = self.begun, None
            begun(data)
        return super().write(data)


class _Hashed(_WrittenThrough):
    """A file being written whose bytes are also hashed (`conda_jlap.document_hash`)."""

    def __init__(self, dest: BinaryIO, hasher: Any) -> None:
        super().__init__(dest)
        self.hasher = hasher

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return super().write(data)


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"

"""The contract every repository format implements, and the record it produces."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, BinaryIO, ClassVar, Literal, NamedTuple, Protocol

from .unpacking import Unpacking


class IndexFetch(Protocol):
    """What a conditional GET of an index document ended with (`psm.http.IndexFetch`)."""

    status: Literal["changed", "unchanged", "missing"]
    url: str
    validators: dict[str, str]


class Peeked(Protocol):
    """The start of a document (`psm.http.Peek`); `head` is empty unless `status` is 200."""

    status: int
    content_type: str
    head: bytes


class Client(Protocol):
    """What a format needs from the HTTP layer (`psm.http.UpstreamClient`)."""

    max_bytes: int

    def fetch_index(
        self,
        url: str,
        dest: BinaryIO,
        validators: Mapping[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> IndexFetch:
        """GET an index document into `dest`, conditionally on `validators`."""
        ...

    def peek(self, url: str, *, headers: dict[str, str] | None = None) -> Peeked: ...

    def fetch_from(self, url: str, start: int, *, max_bytes: int | None = None) -> Any:
        """GET a document from byte `start` on (`psm.http.Part`), None if there is none."""
        ...

    def download(
        self,
        url: str,
        dest: BinaryIO,
        *,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> Any: ...


#: The validators of the documents a format reads to list its units (conda's
#: channeldata.json, the Python project list), by a name the format chooses; kept between
#: runs by the orchestrator. `list_units` reads and updates it.
Documents = MutableMapping[str, dict[str, str]]

#: Turns a compressed index, read as a stream (`raw`), into the document (`dest`); raises
#: FormatError.
Unpack = Callable[[str, BinaryIO, BinaryIO], None]


def fetch_document(
    documents: Documents | None,
    name: str,
    fetch: Callable[[Mapping[str, str]], IndexFetch],
    *,
    tag: str = "",
) -> IndexFetch:
    """`fetch(validators)` a listing document conditionally on the validators kept as `name`
    in `documents`, and keep its new ones there. `tag`: what else the kept validators stand
    for; they are sent only with the same tag."""
    kept = (documents or {}).get(name, {})
    fetched = fetch(kept if kept.get("tag", "") == tag else {})
    if documents is not None:
        if fetched.status == "missing":
            documents.pop(name, None)
        else:
            documents[name] = {**fetched.validators, **({"tag": tag} if tag else {})}
    return fetched


def fetch_first(
    client: Client,
    candidates: Sequence[tuple[str, Unpack | None]],
    dest: BinaryIO,
    validators: Mapping[str, str],
) -> IndexFetch | None:
    """Fetch the first of several representations of one index that upstream has (`(url,
    unpack)`: compressed ones are unpacked into `dest` as they download, see `unpacking`;
    plain ones written there); None if it has none. The one read last time (the validators'
    URL) is asked first, so an unchanged index costs one 304."""
    ordered = sorted(candidates, key=lambda candidate: candidate[0] != validators.get("url"))
    for url, unpack in ordered:
        if unpack is None:
            fetched = client.fetch_index(url, dest, validators)
        else:  # decompressed as it downloads
            with Unpacking(unpack, url, dest) as stream:
                fetched = client.fetch_index(url, stream, validators)
            dest.seek(0)
        if fetched.status != "missing":
            return fetched
    return None


class FormatError(Exception):
    """Upstream metadata could not be understood; names where (URL, key or line) and why."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple:
        # Pickled as its two parts (the default would pass the one message): a check that ran
        # in another process (see `isolation`) raises it here again.
        return (FormatError, (self.where, self.reason))


class OptionsError(ValueError):
    """A mirror's format options are invalid; the message is shown to the user."""


@dataclass(frozen=True, slots=True)
class PackageRecord:
    """One installable file as an upstream index describes it."""

    name: str
    version: str
    filename: str
    unit: str = ""
    url: str = ""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    depends: tuple[str, ...] = ()
    license: str | None = None
    # Format-specific fields, kept verbatim so they can be served back unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The index entry as it is stored and served back (e.g. compact JSON for conda).
    document: str = ""
    # `entry_digest` of the upstream entry: equal digests mean nothing to write.
    entry_digest: int = 0


@dataclass(frozen=True, slots=True)
class Unchanged:
    """An index entry identical to what is stored (same digest): seen, nothing to do.
    `count` > 1: that many entries found unchanged at once (`filename` is then empty)."""

    filename: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class UnitExtras:
    """Unit-level metadata to keep besides the records (conda's `removed`), and `base_url`:
    where the document says its files live, if not beside it (conda's `info.base_url`), kept
    with the rows so that a patch to the document locates its files as the document did."""

    extras: dict[str, Any]
    base_url: str | None = None


@dataclass(frozen=True, slots=True)
class PatchedEntries:
    """The entries a patch to a unit's last document changes (`RepositoryFormat.read_patched`):
    from the document whose hash is `origin` to the one whose hash is `result`, each changed
    entry by (section, name) as it is now, None where removed."""

    origin: str
    result: str
    entries: dict[tuple[str, str], Any]


def entry_digest(raw: bytes, location: str) -> int:
    """A signed 64-bit digest (fits a BIGINT) of an upstream entry and where its file lives."""
    digest = hashlib.blake2b(raw, digest_size=8)
    digest.update(location.encode())
    return int.from_bytes(digest.digest(), "big", signed=True)


@dataclass(frozen=True)
class IndexRequest:
    """Serve the published file `path`, redirect to `redirect`, or answer 406 (neither)."""

    path: str = ""
    redirect: str = ""
    content_types: tuple[str, ...] = ()  # offered, for a 406's message


#: Content types by a file's last suffix: the registered types (`application/gzip`, not the
#: `application/x-tar` that mimetypes guesses for `.tar.gz` without its encoding), never a guess
#: from the system's tables (a hostile upstream's `x.html` must not be served as a page).
CONTENT_TYPES = {
    ".gz": "application/gzip",  # .tar.gz sdists and R packages, PACKAGES.gz
    ".tgz": "application/gzip",
    ".bz2": "application/x-bzip2",  # .tar.bz2 conda packages, repodata.json.bz2
    ".zst": "application/zstd",
    ".xz": "application/x-xz",
    ".tar": "application/x-tar",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".egg": "application/zip",
    ".conda": "application/octet-stream",  # a zip, but no client expects it to say so
}
OCTET_STREAM = "application/octet-stream"


def content_type(filename: str) -> str:
    """The Content-Type a package or index file is served with (octet-stream when unknown)."""
    _, dot, suffix = filename.rpartition(".")
    return CONTENT_TYPES.get(f".{suffix.lower()}", OCTET_STREAM) if dot else OCTET_STREAM


class StoredEntries(Protocol):
    """A unit's entries as stored by the last reads: what `parse_unit` need not check again."""

    def is_current(self, filename: str, digest: int) -> bool:
        """Whether the stored entry is this very one (same `entry_digest`); it then counts as
        seen, with nothing to do."""
        ...

    def current_digests(self) -> Mapping[str, int]:
        """filename -> digest of every entry `is_current` could accept, in one read: for a
        format that compares entries in another process, which cannot call back. The format
        still calls `is_current` for each entry found current, which marks it seen."""
        ...

    def kept_document(self) -> str | None:
        """The path of the unit's index document the stored entries were read from, kept by
        the last run that read it to the end, if the stored entries still match it exactly
        (None: compare digests). A format that diffs against it calls `only` first."""
        ...

    def only(self, filenames: Iterable[str], gone: Iterable[str] = ()) -> int:
        """The entries of the kept document not named here are stored as they are: only
        these (changed, new or gone since) are compared and written. `gone`: those of them
        no longer listed, whose stored rows are removed at once (written while the others
        are read). Returns how many stored entries stay as they are."""
        ...


@dataclass(frozen=True, slots=True)
class Rejected:
    """An index entry that cannot be mirrored; `reason` is counted on the run."""

    filename: str
    reason: str


@dataclass(frozen=True)
class Fetched:
    """The outcome of fetching one index unit (a conda subdir): `changed` means `dest` holds it,
    `patched` that it holds the changes since the document the rows are (`read_patched`).

    `validators` (URL, ETag, Last-Modified) are kept and sent back next time.
    """

    status: Literal["changed", "unchanged", "missing", "patched"]
    url: str = ""
    validators: dict[str, Any] = field(default_factory=dict)
    #: Whether the orchestrator keeps the serial `list_units` gave the unit, and so skips the
    #: unit without a request while that serial stays the same. None: kept for a unit read,
    #: not for a missing one (which is forgotten: asked for again next run). False asks for a
    #: unit read on every run (conditionally on `validators`); True keeps a unit missing.
    keep_serial: bool | None = None

    @property
    def serial_kept(self) -> bool:
        """`keep_serial`, its default applied."""
        return self.status != "missing" if self.keep_serial is None else self.keep_serial


class UnitList(dict[str, int | None]):
    """What `list_units` returns: each unit with its upstream serial (None: none given), and
    the units only `guessed` — tried although the source does not list them (conda's usual
    platforms when no channeldata.json says which exist, R's Archive folders): one of those
    not found is no problem; any other unit not found is worth a warning."""

    def __init__(self, units: Mapping[str, int | None], guessed: Iterable[str] = ()) -> None:
        super().__init__(units)
        self.guessed = frozenset(guessed)


class IndexSource(Protocol):
    """A channel's current packages, as publishing hands them to a format to render."""

    def units(self) -> list[str]: ...

    def documents(self, unit: str, suffix: str = "") -> Iterable[tuple[str, str]]:
        """(filename, document) of the servable packages of a unit, in a stable order."""
        ...

    def grouped_documents(
        self, units: Iterable[str] | None = None
    ) -> Iterator[tuple[str, list[tuple[str, str]]]]:
        """(unit, documents) of every unit with servable packages (or of `units`), in order."""
        ...

    def unit_extras(self, unit: str) -> dict[str, Any]: ...

    def files(self, units: Iterable[str]) -> Iterator[tuple[str, str, int | None, datetime]]:
        """(unit, filename, size, added) of the servable packages of `units`, in unit and
        filename order: what a folder listing shows (size None: not known before download)."""
        ...


class Gap(NamedTuple):
    """Changed rows of a section lying between two of its served, unchanged neighbours (their
    `"filename":record` members; None: the section's start or end)."""

    before: bytes | None
    after: bytes | None
    #: The members of the gap's rows served now, in order (rows no longer served have none).
    members: list[bytes]


class SectionChanges(NamedTuple):
    """A section's rows changed since a render, by gap, in order (None: not asked, see
    `rows`); and the length in bytes of its members now, commas included (what a splice must
    come to; None where the changes were told, not counted: see `splice_changes`)."""

    gaps: list[Gap] | None
    length: int | None
    #: The package names of its changed rows, each with whether a row of it is served now.
    names: Mapping[str, bool] = MappingProxyType({})
    #: Its changed rows: file name and member now (None: not served now), in the database's
    #: order of file names.
    rows: Sequence[tuple[str, bytes | None]] = ()


def _undamaged() -> str | None:
    return None


@dataclass
class Previous:
    """A published index file to splice changed rows into: its bytes (mapped), where each
    section's members lie in them (byte offsets), and what changed in each section.

    `damage` says what is wrong with the bytes, None if they are the published file's: it may
    be checked meanwhile (waited for when called), and a splice must not be written from
    damaged bytes, which the new file's own digest would then vouch for."""

    data: Any  # bytes-like with find()
    sections: list[tuple[int, int]]
    changes: list[SectionChanges]
    damage: Callable[[], str | None] = _undamaged
    #: The lengths of each section's members, in order, where known (`conda_members`): the
    #: changes may then come without gaps, merged in by them.
    members: list[Any] | None = None

    def close(self) -> None:
        self.damage()  # a check still reading the bytes ends first
        close = getattr(self.data, "close", None)
        if close is not None:
            close()


#: Opens one index file being published: `with emit(path, content_type) as out: out.write(b)`.
Emit = Callable[[str, str], AbstractContextManager[BinaryIO]]


class PublishedIndex(Protocol):
    """A channel's published index files, as a withdrawal reads them."""

    def open(self, path: str) -> BinaryIO | None:
        """The published file at `path`, to read (None: no such file is published)."""
        ...


@dataclass(frozen=True)
class FormatCapabilities:
    """What sets a format apart where the rest of PSM handles every format alike (the
    orchestrator, publishing, serving): one value per format, read, never probed for."""

    #: Whether `list_units` is the whole truth, so a unit it stops listing (a project deleted
    #: upstream) loses its packages; not for a listing that falls back to guesses (conda).
    drops_unlisted_units: bool = False
    #: Every unit a channel of this format can have, where known in advance (conda subdirs):
    #: publishing probes each one instead of listing the channel's distinct units.
    fixed_units: frozenset[str] = frozenset()
    #: Whether a unit read with no records still gets (empty) index files (conda subdirs).
    lists_empty_units: bool = False
    #: Names a subchannel of a channel of this format may not take: a subchannel wins over a
    #: same-named folder of its parent (`/api/repo/<channel>/<name>/...`), so it would hide the
    #: channel's own files (conda subdirs, `simple/`, R's `src/` and `cran/`).
    reserved_subchannel_names: frozenset[str] = frozenset()
    #: Whether each unit has its own index files (`unit_paths`), so a publish may render only
    #: the changed units.
    renders_units_alone: bool = False
    #: Published index files whose path ends so also get a `.bz2` copy, made after the
    #: publish (older conda clients ask for `repodata.json.bz2`).
    bz2_copies: tuple[str, ...] = ()
    #: Whether a download checks every digest the index gives (md5 besides sha256); otherwise
    #: md5 only when it is all there is (conda: sha256 suffices, md5 costs CPU).
    checks_every_digest: bool = False
    #: Suffix of the file upstream serves beside each package (`.metadata`, PEP 658), if any.
    sidecar_suffix: str = ""
    #: Whether a mirror's options filter its files (`filter_files`), before any policy.
    filters_files: bool = False
    #: Whether a unit's index document, once read to the end, is kept beside the mirror's
    #: state so the next read compares entries with it (`StoredEntries.kept_document`):
    #: large documents of which a re-sync finds few entries changed (conda subdirs).
    keeps_last_document: bool = False


class RepositoryFormat:
    """One upstream repository format (conda, Python simple index, CRAN).

    A format module holds all knowledge of its format: URLs, parsing, names and options.
    It imports no models and no settings; the HTTP session is handed in.
    """

    kind: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[FormatCapabilities] = FormatCapabilities()
    #: An example of this format's mirror options (JSON), shown in the mirror form.
    options_help: ClassVar[str] = ""

    # --- Mirror options and sources ---------------------------------------------------------

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Return the validated options for a mirror of this format, or raise OptionsError."""
        if options:
            unknown = ", ".join(sorted(options))
            raise OptionsError(f"{self.label} mirrors take no options (got: {unknown})")
        return {}

    def source_warnings(self, source_url: str, options: Mapping[str, Any]) -> list[str]:
        """Return advice about mirroring this source (shown, never blocking)."""
        return []

    def probe_source(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> list[str]:
        """Say what makes the source not look like a repository of this format ([]: it does),
        from a request or two that read little (`client.peek`: an index may be hundreds of MB).
        Upstream errors are raised, for the caller to report."""
        return []

    def requested_names(self, options: Mapping[str, Any]) -> list[str]:
        """The package names the options ask for one by one, where these are not units (R's
        package list): after a run, each one the source's index lacks is warned about."""
        return []

    # --- Mirroring in units (a conda subdir, a Python project) ------------------------------

    def list_units(
        self,
        client: Client,
        source_url: str,
        options: Mapping[str, Any],
        documents: Documents | None = None,
    ) -> dict[str, int | None] | None:
        """The units with their upstream serial where the source gives one (a unit whose
        serial did not change since it was last read is skipped without a request); a
        `UnitList` also says which units are only guessed.

        A document read to list the units (see `fetch_document`) is fetched conditionally on
        the validators in `documents`; when it answers 304 the listing is the one read last
        time: None (the orchestrator lists the units it kept from that run).
        """
        raise NotImplementedError

    def fetch_unit(
        self,
        client: Client,
        source_url: str,
        unit: str,
        dest: BinaryIO,
        validators: Mapping[str, str],
    ) -> Fetched:
        """Fetch one unit's index into `dest`, conditionally on `validators`."""
        raise NotImplementedError

    #: Threads fetching the next units' indexes while one is read (see the sync's prefetch):
    #: a few for big indexes; more for many small ones whose time is the upstream's latency.
    unit_fetchers: ClassVar[int] = 4

    def unit_buffer(
        self, kept: str | None = None, begun: Callable[[], None] | None = None
    ) -> BinaryIO:
        """A new temporary file for one unit's index (`fetch_unit` writes it, `parse_unit`
        reads it), deleted on close: on disk, as an index may be hundreds of MB. `kept`: the
        unit's last document kept (see `capabilities.keeps_last_document`), which the format
        may start comparing with as soon as the new one downloads; `begun`, called then, where
        the format can tell."""
        return tempfile.NamedTemporaryFile(prefix="psm-index-")  # noqa: SIM115 - caller closes

    def parse_unit(
        self, fileobj: BinaryIO, url: str, unit: str, stored: StoredEntries | None = None
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """Stream the records of a fetched unit; raise FormatError if it is not readable.

        Entries `stored.is_current` accepts come back as `Unchanged`, without being checked
        again.
        """
        raise NotImplementedError

    def read_patched(
        self,
        fileobj: BinaryIO,
        url: str,
        base_url: str | None,
        stored_entries: Callable[[Iterable[tuple[str, str]]], Mapping[tuple[str, str], Any]],
    ) -> PatchedEntries | None:
        """The entries a `patched` fetch of the document at `url` (whose files live at
        `base_url`, None: beside it) changes, given the stored entries it changes inside
        (`stored_entries`: key -> (stored document, upstream URL)); None if they cannot be
        worked out: the unit is fetched whole."""
        return None

    def parse_patched(
        self,
        entries: PatchedEntries,
        url: str,
        unit: str,
        stored: StoredEntries,
        base_url: str | None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """`parse_unit` of the entries a patch changes, the others stored as they are."""
        raise NotImplementedError

    def filter_files(
        self, options: Mapping[str, Any], files: Iterable[tuple[str, str, str, str, Mapping]]
    ) -> dict[str, str] | None:
        """Mirror filters (with `capabilities.filters_files`): `key` -> exclusion reason (""
        enters) for files given as (key, unit, filename, version, document)."""
        return {}

    # --- Publishing -------------------------------------------------------------------------

    def unit_paths(self, unit: str) -> list[str]:
        """The index files of one unit (with `capabilities.renders_units_alone`)."""
        return []

    def render_index(self, source: IndexSource, emit: Emit, units: set[str] | None = None) -> None:
        """Write the index files of a channel through `emit`: all of them, or (`units`, with
        `capabilities.renders_units_alone`) those of the given units and the channel-wide
        ones."""
        raise NotImplementedError

    def withdraw(
        self, index: PublishedIndex, files: Mapping[str, set[str]], emit: Emit
    ) -> set[str]:
        """Rewrite the published index files that list any of `files` (unit -> filenames) so
        that they no longer do, every other entry as it was; return the paths this replaces:
        the files emitted (with the copies published beside them, compressed ones), and any
        copy that could not be remade, to drop. Empty: none of the files was listed.

        Only `index` is read, never the channel's packages: a frozen channel loses the
        withdrawn files and gains nothing. `.bz2` copies (`capabilities.bz2_copies`) are
        remade by publishing.
        """
        return set()

    # --- Serving ----------------------------------------------------------------------------

    def index_request(self, path: str, accept: str | None) -> IndexRequest | None:
        """How to answer a request for an index page that depends on the request (content
        negotiation, name normalisation); None: serve the published file at `path` as is."""
        return None

    def locate_sidecar(self, path: str) -> tuple[str, str, str] | None:
        """(unit, package filename, suffix) of a file served beside a package, fetched from
        upstream at `<package url><suffix>` (PEP 658 metadata), or None."""
        return None

    def sidecar_digest(self, document: Mapping[str, Any]) -> str | None:
        """The sha256 upstream gives for a package's sidecar file, from its document."""
        return None

    def locate(self, path: str) -> tuple[str, str] | None:
        """(unit, filename) of a package file path inside a channel, or None."""
        unit, _, filename = path.rpartition("/")
        return (unit, filename) if filename else None

    def names_a_file(self, query: str) -> bool:
        """Whether a search for `query` means a package file name (else a package name)."""
        return False

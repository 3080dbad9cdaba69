"""Reading a conda subdir's repodata.json: checked as a whole, then section by section.

First the whole document is checked (see `conda_document`: a truncated or malformed one fails
before any record is yielded), which yields its extras as UnitExtras and the top-level keys
left out as Rejected. Then each entry of each section is digested from its raw bytes: on a
re-sync almost every entry is current, and costs one parse and one digest, no record.

A re-sync of a large subdir (many stored) uses the second core (see `isolation`): a child
process digests `packages` while this one digests `packages.conda` (`.conda` files are read
first, see ORDER).

While the stored rows are still those of the last document read (kept, see
`mirrors_app.sync.fetch_state`), a re-sync compares each entry's raw bytes with it instead,
by fingerprint (`conda_fingerprints`: those of the kept document were left beside it by the
read that kept it), and parses only the entries that differ. For a large subdir a child
process compares the second section, started as the new document begins to download
(`SubdirFile`), while this process checks the whole document and compares the first. A
document laid out to be followed (`conda_stream`: pretty-printed, as conda-forge's is) two
children read as it downloads instead, a section each (`_followed`, `_joined`): this process
then reads nothing but their answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any, BinaryIO, NamedTuple

import msgspec
import orjson

from . import conda_fingerprints as fingerprints
from .base import (
    FormatError,
    PackageRecord,
    Rejected,
    StoredEntries,
    Unchanged,
    UnitExtras,
)
from .conda_document import Document, Raw, mapped
from .conda_records import SECTIONS, base_url, entry_record
from .conda_stream import DocumentStream, Unfollowed, indentation
from .isolation import Child, ChildFailed, Receive

#: A document this large has its second section digested by a child process on a re-sync
PARALLEL_BYTES = 16 * 1024 * 1024
#: ... of a subdir with this many stored records.
PARALLEL_FROM = 50_000
#: Why an entry that is valid JSON is refused: orjson (and so PSM's stored records and
#: rendering) holds integers up to 64 bits.
UNREPRESENTABLE = "record holds a number PSM cannot represent"

Item = PackageRecord | Rejected | Unchanged | UnitExtras

#: Parses one raw entry (a view into the document; msgspec reads it without a copy).
_ENTRY = msgspec.json.Decoder()
#: The order sections are read in: a subdir's `.conda` files come before its `.tar.bz2` ones,
#: so that a first load decides a `.tar.bz2` knowing its `.conda` twin (the legacy rule, see
#: `policies_app.engine.OneByOne`).
ORDER = (SECTIONS[1], SECTIONS[0])
_SECTIONS = [section for section, _ in ORDER]


def read_repodata(
    fileobj: BinaryIO, url: str, unit: str, stored: StoredEntries | None = None
) -> Iterator[Item]:
    """The items of a subdir's repodata.json (see the module's docstring)."""
    fileobj.seek(0)  # flushes what was written: the document is mapped, or read by name
    path = getattr(fileobj, "name", None)
    large = isinstance(path, str) and _size(path) >= PARALLEL_BYTES
    kept = stored.kept_document() if stored is not None else None
    if kept is not None:
        if (yield from _against_kept(fileobj, large, url, unit, stored, kept)):
            return
    if stored is not None and large:
        yield from _read_in_two(fileobj, path, url, unit, stored)
        return
    document, base = _opened(fileobj, url)
    yield from _document_items(document)
    for section, suffix in ORDER:
        entries = document.entries(section)
        yield from _scan(entries, unit, base, section, suffix, stored)
        _leave(_fetched(fileobj), document, section, entries)


def _fetched(fileobj: BinaryIO) -> str | None:
    """Where a document's fingerprints are left: beside a fetched one (a `SubdirFile`)."""
    return fileobj.name if isinstance(fileobj, SubdirFile) else None


def _leave(
    at: str | None,
    document: Document,
    section: str,
    entries: dict[str, Raw],
    prints: fingerprints.Entries | None = None,
) -> None:
    """Leave the fingerprints of a section (`prints`, else worked out from its `entries`)
    beside the document at `at` (None: nowhere), for the next read to compare with."""
    if at is not None:
        prints = fingerprints.of(entries) if prints is None else prints
        fingerprints.save(at, section, _info_base(document.value("info")), prints)


def _opened(
    fileobj: BinaryIO, url: str, top: dict[str, bytes] | None = None
) -> tuple[Document, str]:
    """The checked document and where its package files live (`top`: its top-level values,
    if it was read already as it downloaded)."""
    document = Document(fileobj, url) if top is None else Document.read_already(top, url)
    info = document.value("info")
    if info is not None and not isinstance(info, dict):
        raise FormatError(f"{url} [info]", "must be an object")
    return document, base_url(url, _info_base(info))


def _section_decoder(section: str) -> msgspec.json.Decoder:
    """Reads a document for `info` and the raw `entries` of one section only (the others are
    checked, not kept)."""
    fields = [("info", Any, None), ("entries", dict[str, Raw], msgspec.field(default_factory=dict))]
    struct = msgspec.defstruct("KeptSection", fields, rename={"entries": section})
    return msgspec.json.Decoder(struct)


_KEPT = {section: _section_decoder(section) for section in _SECTIONS}

#: A section compared with the kept document: where the kept document's files lived, the
#: (filename, raw) entries changed or new, how many are the same, the filenames no longer listed.
Compared = tuple[str, list, int, list[str]]


def _kept_entries(old: BinaryIO, section: str) -> tuple[str | None, fingerprints.Entries] | None:
    """The kept document `old`: its `info.base_url` and the fingerprints of a section's
    entries (one pass, no record parsed); None if it cannot be read. Fingerprints, not views
    of the mapped file: it is released before the new document is mapped, so the two never
    count in memory together."""
    try:
        kept = _KEPT[section].decode(mapped(old))
    except (OSError, ValueError, msgspec.DecodeError):
        return None
    if kept.info is not None and not isinstance(kept.info, dict):
        return None
    return _info_base(kept.info), fingerprints.of(kept.entries)


def _kept_side(kept: str, section: str) -> tuple[str | None, fingerprints.Entries] | None:
    """`_kept_entries` of the kept document at `kept`: the fingerprints left beside it, or
    else read from it; None if it cannot be read."""
    left = fingerprints.load(kept, section)
    if left is not None:
        return left
    try:
        with open(kept, "rb") as old:
            return _kept_entries(old, section)
    except OSError:
        return None


def _compared(
    entries: dict[str, Raw], old: dict[str, int]
) -> tuple[list, int, list[str], dict[str, int]]:
    """A section's (filename, raw) whose bytes changed or are new, how many are the same, the
    filenames no longer listed, and the fingerprints of all its entries."""
    new = fingerprints.of(entries)
    found = [
        (filename, entries[filename]) for filename, fp in new.items() if old.get(filename) != fp
    ]
    same = len(entries) - len(found)
    return found, same, _gone(old, new, same + sum(name in old for name, _ in found)), new


def _gone(old: fingerprints.Entries, new: fingerprints.Entries, listed: int) -> list[str]:
    """The filenames of the kept section (`old`) the new one (`new`) no longer lists, sorted.
    `listed`: how many of the new one's were in the kept one; when that is all of the kept
    one's, nothing is gone, and the names need no pass."""
    return [] if listed == len(old) else sorted(old.keys() - new.keys())


def _compare_in_child(
    receive: Receive, kept: str, section: str, path: str | None = None, own: bool = False
) -> Compared | Streamed | FormatError | None:
    """In the child: one section of a new document compared with the kept document's
    (`Compared`, the changed entries as bytes). The kept side is worked out first, while the
    new document may still be downloading; `receive()` then gives the new one's (path, URL,
    whether to leave its fingerprints beside it), or None if it is not to be compared. Only
    that section of each is read: the parent checks the whole new document meanwhile. None if
    the kept one cannot be read (the parent then compares the section itself); a FormatError
    is returned, raised there.

    `path`: the new document's file, given as it begins to download. A document laid out to
    be followed (see `conda_stream`) is read as it is written, both sections compared: the
    answer is then the whole reading (`Streamed`), and the parent reads nothing. `own`:
    another child follows it too, for the other section: this one reads its own only."""
    before = _kept_side(kept, section)
    if path is not None and before is not None:
        given, streamed = _followed(receive, kept, path, before, section, own)
        if streamed is not None:
            return streamed
    else:
        given = receive()
    if given is None or before is None:
        return None
    path, url, leave = given
    kept_base, hashes = before
    try:
        with open(path, "rb") as fileobj:
            new = _KEPT[section].decode(mapped(fileobj))
    except msgspec.DecodeError:
        return FormatError(f"{url} [{section}]", "must be an object of file name to record")
    found, same, gone, prints = _compared(new.entries, hashes)
    if leave:
        fingerprints.save(path, section, _info_base(new.info), prints)
    return base_url(url, kept_base), [(name, bytes(raw)) for name, raw in found], same, gone


class Streamed(NamedTuple):
    """A document read by the child as it downloaded: its top-level values as bytes (a
    section's `{}`; those its reading proved, `DocumentStream.proved`), and each section
    compared with the kept document's. A child that read one section of it (`own`, see
    `_joined`) says where the sections met were (the `DocumentStream`'s `first`, `own_at`,
    `next_at`) and the base each section's fingerprints were left with (`left`)."""

    top: dict[str, bytes]
    compared: dict[str, Compared]
    first: str | None = None
    own_at: int | None = None
    next_at: int | None = None
    left: dict[str, Any] | None = None


def _joined(answers: list[Any]) -> Streamed | None:
    """The children's readings of a document followed as it downloaded as one: a child's
    that read both sections, or two that read one each, if they make up the document (the
    first section's reader proved all up to the key where the other found its own, see
    `conda_stream`); None otherwise."""
    if not answers or not all(isinstance(answer, Streamed) for answer in answers):
        return None
    if len(answers) == 1:
        return answers[0]
    # The first section's reader first (either, where there is no section).
    first, then = sorted(answers, key=lambda answer: answer.first not in answer.compared)
    if (first.first, first.next_at) != (then.first, then.own_at):
        return None
    top = dict(first.top)
    top.update(then.top)  # from the second section's key on (`DocumentStream.proved`)
    return Streamed(
        top, {**first.compared, **then.compared}, left={**(first.left or {}), **(then.left or {})}
    )


class _Tally:
    """A section of a document followed as it downloads, compared batch by batch with the
    kept document's fingerprints (`old`)."""

    def __init__(self, old: fingerprints.Entries) -> None:
        self.old = old
        self.prints: fingerprints.Entries = {}
        self.changed: dict[str, bytes] = {}  # filename -> raw entry, changed or new

    def add(self, entries: dict[str, Raw]) -> None:
        new = fingerprints.of(entries)
        before = len(self.prints)
        self.prints.update(new)
        if len(self.prints) != before + len(new):  # some given again: the last one counts
            for filename in new.keys() & self.changed.keys():
                del self.changed[filename]
        get = self.old.get
        found = [filename for filename, fp in new.items() if get(filename) != fp]
        self.changed.update({filename: bytes(entries[filename]) for filename in found})

    def compared(self, base: str) -> Compared:
        found = list(self.changed.items())
        same = len(self.prints) - len(found)
        listed = same + sum(filename in self.old for filename in self.changed)
        return base, found, same, _gone(self.old, self.prints, listed)


#: What `_followed` polls while it waits for the parent (nothing handed yet).
_WAITING = object()


def _followed(
    receive: Receive,
    kept: str,
    path: str,
    before: tuple[str | None, fingerprints.Entries],
    section: str | None = None,
    own: bool = False,
) -> tuple[Any, Streamed | None]:
    """In the child: the document at `path` followed as it is written (see
    `conda_stream`), each section compared as its entries arrive with the kept document's
    (`before`: the kept side of the child's own `section`, by default the second; the
    other's is worked out first, unless `own`: another child reads the other). Returns
    what the parent handed and the reading; None for the latter if the document is not
    laid out to be followed (or its file is not the one handed): the child's section is then
    compared as usual. Each section's fingerprints are left beside the document as soon as
    it has been read."""
    handed = _handed(receive)
    section = section or Comparison.section
    sides = {section: before}
    if not own:
        other = next(name for name in _SECTIONS if name != section)
        sides = {other: _kept_side(kept, other), section: before}
        if sides[other] is None:
            return handed.get(), None
    tallies = {name: _Tally(side[1]) for name, side in sides.items()}
    stream = DocumentStream(
        path, lambda name, entries: tallies[name].add(entries), section if own else None
    )
    left: dict[str, Any] = {}  # section -> the base its fingerprints were left with
    given: Any = _WAITING
    try:
        while (given := _poll(handed)) is _WAITING:
            stream.advance()
            for name in stream.read - left.keys():  # read whole: left now, not at the end
                left[name] = _left(path, name, stream.top, tallies[name])
        if given is None or given[0] != path:
            return given, None
        top = stream.finish()
    except Unfollowed:
        return (handed.get() if given is _WAITING else given), None
    finally:
        stream.close()
    _, url, leave = given
    for name, tally in tallies.items():
        if not leave:
            left.pop(name, None)
            with contextlib.suppress(OSError):
                os.unlink(path + fingerprints.suffix(name))
        elif left.get(name, _WAITING) != _top_base(top):  # `info` came after it
            left[name] = _left(path, name, top, tally)
    compared = {
        name: tally.compared(base_url(url, sides[name][0])) for name, tally in tallies.items()
    }
    proved = stream.proved()
    return given, Streamed(proved, compared, stream.first, stream.own_at, stream.next_at, left)


def _left(path: str, section: str, top: dict[str, bytes], tally: _Tally) -> Any:
    """Leave a section's fingerprints beside the document at `path`; the base they name."""
    base = _top_base(top)
    fingerprints.save(path, section, base, tally.prints)
    return base


def _top_base(top: dict[str, bytes]) -> Any:
    """`info.base_url` of a document's top-level values read so far (None without one, or
    if `info` does not parse: the parent's check of the document then fails it)."""
    try:
        return _info_base(msgspec.json.decode(top["info"])) if "info" in top else None
    except msgspec.DecodeError:
        return None


def _handed(receive: Receive) -> queue.Queue:
    """What the parent hands next, put in a queue by a thread as it arrives (None if the
    parent closed the pipe instead)."""
    box: queue.Queue = queue.Queue(1)

    def take() -> None:
        try:
            value = receive()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more comes
            value = None
        box.put(value)

    threading.Thread(target=take, name="psm-handed", daemon=True).start()
    return box


def _poll(handed: queue.Queue) -> Any:
    try:
        return handed.get(timeout=0.02)
    except queue.Empty:
        return _WAITING


def _info_base(info: Any) -> Any:
    """A document's `info.base_url` (None without one)."""
    return info.get("base_url") if isinstance(info, dict) else None


class Comparison:
    """A child process comparing the second section of a new document with the kept one's at
    `kept` (the parent compares the first once it has checked the whole document): started as
    the new one begins to download (the kept side is worked out meanwhile, the first
    section's too, in a thread: `kept_side`), `handed` the new one once it is whole, then
    asked for its `result`. Closing it ends the child, done or not.

    Given the new document's `path` as it begins to download, the child follows it as it is
    written instead, both sections (`_followed`): if it could, `streamed` is its reading of
    the whole document, and the parent reads nothing. `follows`: the document's first bytes
    say it will be followed. Two children then follow it, one section each (`children`),
    so that what is left to read when the download ends is read on two cores; the first
    section's kept side is not worked out here."""

    section = ORDER[1][0]

    def __init__(self, kept: str, path: str | None = None, *, follows: bool = False) -> None:
        self.kept, self.path = kept, path
        here = ORDER[0][0]
        two = path is not None and follows
        self.children = {self.section: _started(_compare_in_child, kept, self.section, path, two)}
        if two:
            self.children[here] = _started(_compare_in_child, kept, here, path, True)
        self._answers: dict[str, Any] = {}
        # Here, not at the top: the child imports this module, and needs neither Django nor
        # Celery (`psm`'s own import), which would double its start-up.
        from psm.own_connection import meanwhile

        # Worked out meanwhile where this process will likely compare the first section (the
        # document's first bytes say the child will not follow it); else only if it must.
        self._kept_here = (
            partial(_kept_side, kept, here)
            if follows
            else meanwhile(lambda: _kept_side(kept, here), "psm-kept-side")
        )

    def kept_side(self, section: str) -> tuple[str | None, fingerprints.Entries] | None:
        """`_kept_side` of a section this process compares (worked out meanwhile for the
        first)."""
        return self._kept_here() if section == ORDER[0][0] else _kept_side(self.kept, section)

    def hand(self, path: str, url: str, leave: bool) -> None:
        """Give the children the new document (a child that cannot take it is dropped);
        `leave`: its fingerprints are left beside it."""
        for section, child in self.children.items():
            if child is not None:
                self.children[section] = _sent(child, (path, url, leave))

    def streamed(self) -> Streamed | None:
        """The children's reading of the whole handed document, if they followed it as it
        downloaded; None if they did not (then `result` is each one's section's comparison).
        """
        if self.path is None or None in self.children.values() or not _followable(self.path):
            return None
        streamed = _joined([self._answer(section) for section in self.children])
        if streamed is not None and len(self.children) > 1:
            base = _top_base(streamed.top)
            for section, left in (streamed.left or {}).items():
                if left != base:  # `info` came in a part the child did not read
                    with contextlib.suppress(OSError):
                        os.unlink(self.path + fingerprints.suffix(section))
        return streamed

    def result(self, section: str | None = None) -> Compared | None:
        """A child's comparison of its `section` (by default the second); None if there is
        none, it failed or could not read the kept document (the caller compares the
        section)."""
        answer = self._answer(section or self.section)
        if isinstance(answer, FormatError):
            raise answer
        return None if isinstance(answer, Streamed) else answer

    def _answer(self, section: str) -> Any:
        """The answer of the child comparing `section` (a FormatError, returned: raised by
        `result`, after the parent's own check)."""
        if section not in self._answers:
            try:
                self._answers[section] = _child_result(self.children.get(section))
            except FormatError as exc:
                self._answers[section] = exc
        return self._answers[section]

    def close(self) -> None:
        for child in self.children.values():
            if child is not None:
                child.stop()


def _followable(path: str) -> bool:
    """Whether the child follows the document at `path` as it downloads (see
    `conda_stream`): the parent then waits for its reading before reading anything."""
    try:
        with open(path, "rb") as head:
            return indentation(head.read(4096)) is not None
    except OSError:
        return False


class SubdirFile:
    """A subdir's fetched document: a temporary file, deleted on close with the fingerprints
    left beside it (its `companions`, kept with it). Given the subdir's kept document (a
    large one), its `Comparison` starts when the download begins (`begun`: a 200's first
    bytes, given), so that the kept side is worked out while the new one downloads; the
    caller's `begun` is called then too."""

    def __init__(self, kept: str | None = None, begun: Callable[[], None] | None = None) -> None:
        self.file = tempfile.NamedTemporaryFile(prefix="psm-index-")  # noqa: SIM115
        self.kept = kept if kept is not None and _size(kept) >= PARALLEL_BYTES else None
        self.comparison: Comparison | None = None
        self._begun = begun  # the caller's, called once

    def begun(self, head: bytes = b"") -> None:
        if self.kept is not None and self.comparison is None:
            follows = indentation(head[:4096]) is not None
            self.comparison = Comparison(self.kept, self.file.name, follows=follows)
        if self._begun is not None:
            begun, self._begun = self._begun, None
            begun()

    @property
    def companions(self) -> list[str]:
        """The suffixes of the files left beside this one (see `conda_fingerprints`)."""
        return [
            suffix
            for suffix in map(fingerprints.suffix, _SECTIONS)
            if os.path.exists(self.file.name + suffix)
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> SubdirFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.comparison is not None:
                self.comparison.close()
        finally:
            for suffix in self.companions:
                with contextlib.suppress(OSError):
                    os.unlink(self.file.name + suffix)
            self.file.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_changes(
    base: str, unit: str, compared: dict[str, Compared], stored: StoredEntries
) -> Iterator[Item]:
    """`read_repodata` against the kept document the stored rows match (each section
    `compared`): an entry whose raw bytes are the same is stored as it is (counted, not
    parsed); the others are digested as usual, and entries no longer listed are left to be
    removed."""
    changed, unchanged, gone = [], 0, []
    for section, suffix in ORDER:
        _, found, same, missing = compared.pop(section)
        changed.append((section, suffix, found))
        unchanged += same
        gone += missing
    stored.only([filename for *_, found in changed for filename, _ in found] + gone, gone)
    del gone
    if unchanged:
        yield Unchanged("", unchanged)
    yield from _changed_items(changed, base, unit, stored)


def read_entries(
    entries: dict[tuple[str, str], Any],
    url: str,
    unit: str,
    stored: StoredEntries,
    info_base: str | None,
) -> Iterator[Item]:
    """The items of the entries a patch changed (section, file name -> the entry, None if
    removed: see `conda_jlap`), checked as a document's: the other stored entries stay.
    `info_base`: the document's `info.base_url`, which the patch left as it was."""
    unchanged = stored.only(
        [filename for _, filename in entries],
        [filename for (_, filename), entry in entries.items() if entry is None],
    )
    if unchanged:
        yield Unchanged("", unchanged)
    changed = [
        (
            section,
            suffix,
            [
                (filename, orjson.dumps(entry))
                for (where, filename), entry in entries.items()
                if where == section and entry is not None
            ],
        )
        for section, suffix in ORDER
    ]
    yield from _changed_items(changed, base_url(url, info_base), unit, stored)


def _changed_items(
    changed: list[tuple[str, str, list]], base: str, unit: str, stored: StoredEntries
) -> Iterator[Item]:
    """The items of the (section, suffix, [(filename, raw)]) entries found changed or new."""
    location = base.encode()
    for section, suffix, found in changed:
        for filename, raw in found:
            parsed = _digest(raw, location)
            if parsed is None:
                yield Rejected(filename[:255], UNREPRESENTABLE)
                continue
            record, compact, digest = parsed
            if stored.is_current(filename, digest):  # the same record, written otherwise
                yield Unchanged(filename)
            else:
                yield entry_record(section, suffix, filename, record, unit, base, compact, digest)


def _against_kept(
    fileobj: BinaryIO, large: bool, url: str, unit: str, stored: StoredEntries, kept: str
) -> Generator[Item, None, bool]:
    """`_read_changes` against the kept document at `kept`; False (nothing yielded) if it
    cannot be compared with: unreadable, or files listed elsewhere. A large document has its
    second section compared by a child process (started as it downloaded, see `SubdirFile`,
    or now) while this one checks the whole document and compares the first; a section whose
    child fails is compared here."""
    leave = _fetched(fileobj)
    comparison = fileobj.comparison if leave is not None else None
    if comparison is None or comparison.kept != kept:
        comparison = Comparison(kept) if large else None
    try:
        if comparison is not None:
            comparison.hand(fileobj.name, url, leave is not None)
        streamed = comparison.streamed() if comparison is not None else None
        if streamed is not None:  # read by the child as it downloaded
            document, base = _opened(fileobj, url, streamed.top)
            checked = list(_document_items(document))
            compared: dict[str, Compared | None] = dict(streamed.compared)
        else:
            document, base = _opened(fileobj, url)
            checked = list(_document_items(document))  # FormatError before any comparison
            compared = _compared_sections(document, kept, leave, comparison)
        if not all(compared.values()):
            return False  # the kept document cannot be read
        if any(result[0] != base for result in compared.values()):
            return False  # every entry's location changed: compared by digest
        yield from checked
        yield from _read_changes(base, unit, compared, stored)
        return True
    finally:
        if comparison is not None:
            comparison.close()


def _compared_sections(
    document: Document, kept: str, leave: str | None, comparison: Comparison | None
) -> dict[str, Compared | None]:
    """Each section of the new `document` compared with the kept one's: by the children
    (if any), the others here; None for a section whose kept side cannot be read."""
    theirs = comparison.children if comparison is not None else {}
    kept_side = comparison.kept_side if comparison is not None else None
    compared = {
        section: None
        if section in theirs
        else _compare_here(document, kept, section, leave, kept_side)
        for section in _SECTIONS
    }
    for section in theirs:
        compared[section] = comparison.result(section)
    for section, result in compared.items():
        if result is None:  # its child failed
            compared[section] = _compare_here(document, kept, section, leave)
    return compared


def _compare_here(
    document: Document,
    kept: str,
    section: str,
    leave: str | None,
    kept_side: Callable[[str], tuple[str | None, fingerprints.Entries] | None] | None = None,
) -> Compared | None:
    """A section of the new `document` compared with the kept document's in this process,
    its fingerprints left beside the file at `leave`; None if the kept one cannot be read.
    `kept_side`: where the kept side was worked out already (`Comparison.kept_side`)."""
    before = (kept_side or partial(_kept_side, kept))(section)
    if before is None:
        return None
    kept_base, hashes = before
    entries = document.entries(section)
    found, same, gone, prints = _compared(entries, hashes)
    _leave(leave, document, section, entries, prints)
    return base_url(document.url, kept_base), found, same, gone


def _child_result(child: Child | None) -> Compared | None:
    """A child's comparison of its section; None if there is no child or it failed (or
    could not read the kept document): the section is then compared here."""
    if child is None:
        return None
    try:
        result = child.result()
    except ChildFailed:
        return None
    if isinstance(result, FormatError):
        raise result
    return result


def _document_items(document: Document) -> Iterator[UnitExtras | Rejected]:
    """What the check of the document found: the extras to keep (with `info.base_url`), then
    each key left out (counted on the run)."""
    extras, left_out = document.check()
    base = _info_base(document.value("info"))
    yield UnitExtras(extras, base if isinstance(base, str) and base else None)
    for key, reason in left_out:
        yield Rejected(key, reason)


def _digest(raw: Raw, location: bytes) -> tuple[Any, bytes, int] | None:
    """(record, compact JSON, `entry_digest`) of a raw entry; None if PSM cannot hold it."""
    try:
        record = _ENTRY.decode(raw)
        compact = orjson.dumps(record)
    except (msgspec.DecodeError, orjson.JSONEncodeError):
        return None
    digest = hashlib.blake2b(compact, digest_size=8)  # `entry_digest`, without a copy
    digest.update(location)
    return record, compact, int.from_bytes(digest.digest(), "big", signed=True)


def _scan(
    entries: dict[str, Raw],
    unit: str,
    base: str,
    section: str,
    suffix: str,
    stored: StoredEntries | None,
) -> Iterator[PackageRecord | Rejected | Unchanged]:
    location = base.encode()
    is_current = stored.is_current if stored is not None else None
    for filename, raw in entries.items():
        parsed = _digest(raw, location)
        if parsed is None:
            yield Rejected(filename[:255], UNREPRESENTABLE)
            continue
        record, compact, digest = parsed
        if is_current is not None and is_current(filename, digest):
            yield Unchanged(filename)
        else:
            yield entry_record(section, suffix, filename, record, unit, base, compact, digest)


def _read_in_two(
    fileobj: BinaryIO, path: str, url: str, unit: str, stored: StoredEntries
) -> Iterator[Item]:
    """`read_repodata` with a child process digesting the second section against the stored
    digests while this one digests the first; without a child (a subdir with few stored
    records, or a child that fails), all of it is done here."""
    (first, first_suffix), (second, second_suffix) = ORDER
    # Started first: it starts up while this process reads the stored digests; a child with
    # nothing to do (few stored) is sent None and ends.
    child = _started(_digest_in_child, path, url, second)
    split = False
    try:
        digests = stored.current_digests()
        split = len(digests) >= PARALLEL_FROM
        if child is not None:
            known = {f: d for f, d in digests.items() if f.endswith(second_suffix)}
            child = _sent(child, (known, _fetched(fileobj) is not None) if split else None)
            del known
        del digests
        document, base = _opened(fileobj, url)
    except BaseException:
        if child is not None:
            child.stop()
        raise
    result: Any = None
    try:
        yield from _document_items(document)
        entries = document.entries(first)
        yield from _scan(entries, unit, base, first, first_suffix, stored)
        _leave(_fetched(fileobj), document, first, entries)
        del entries
        if child is not None and split:
            try:
                result = child.result()
            except ChildFailed:
                result = None  # its work is done here below
    finally:
        if child is not None:
            child.stop()
    if isinstance(result, FormatError):
        raise result
    if result is None:
        entries = document.entries(second)
        yield from _scan(entries, unit, base, second, second_suffix, stored)
        _leave(_fetched(fileobj), document, second, entries)
        return
    unchanged, changed = result
    for filename, digest in unchanged:
        stored.is_current(filename, digest)  # marks it seen
        yield Unchanged(filename)
    del unchanged
    for filename, compact, digest in changed:
        if compact is None:
            yield Rejected(filename[:255], UNREPRESENTABLE)
        else:
            record = orjson.loads(compact)  # the same dict: orjson writes what it reads back
            yield entry_record(second, second_suffix, filename, record, unit, base, compact, digest)


def _started(function: Any, *args: Any) -> Child | None:
    """A child running `function`; None if it could not be started."""
    try:
        return Child(function, *args)
    except ChildFailed:
        return None


def _sent(child: Child, value: Any) -> Child | None:
    """The child, sent `value`; None (and the child ended) if that failed."""
    try:
        child.send(value)
    except ChildFailed:
        child.close()
        return None
    return child


def _digest_in_child(receive: Receive, path: str, url: str, section: str) -> Any:
    """In the child: given the stored digests of `section` by the parent and whether to leave
    its fingerprints beside the document (None: nothing to do), digest it and return what is
    unchanged ((filename, digest)) and what is not ((filename, compact JSON or None if PSM
    cannot hold it, digest)); a FormatError is returned, raised there."""
    given = receive()
    if given is None:
        return None
    known, leave = given
    try:
        with open(path, "rb") as fileobj:
            document, base = _opened(fileobj, url)
            entries = document.entries(section)
            location = base.encode()
            unchanged, changed = [], []
            for filename, raw in entries.items():
                parsed = _digest(raw, location)
                if parsed is None:
                    changed.append((filename, None, 0))
                elif known.get(filename) == parsed[2]:
                    unchanged.append((filename, parsed[2]))
                else:
                    changed.append((filename, parsed[1], parsed[2]))
            _leave(path if leave else None, document, section, entries)
    except FormatError as exc:
        return exc
    return unchanged, changed

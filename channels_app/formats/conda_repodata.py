"""Reading a conda subdir's repodata.json: checked as a whole, then section by section.

First the whole document is checked (see `conda_document`: a truncated or malformed one fails
before any record is yielded), which yields its extras as UnitExtras and the top-level keys
left out as Rejected. Then each entry of each section is digested from its raw bytes: on a
re-sync almost every entry is current, and costs one parse and one digest, no record.

A re-sync of a large subdir (many stored) uses the second core (see `isolation`): a child
process digests `packages` while this one digests `packages.conda` (`.conda` files are read
first, see ORDER).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

import msgspec
import orjson

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


def read_repodata(
    fileobj: BinaryIO, url: str, unit: str, stored: StoredEntries | None = None
) -> Iterator[Item]:
    """The items of a subdir's repodata.json (see the module's docstring)."""
    fileobj.seek(0)  # flushes what was written: the document is mapped, or read by name
    path = getattr(fileobj, "name", None)
    large = (
        isinstance(path, str) and os.path.exists(path) and os.path.getsize(path) >= PARALLEL_BYTES
    )
    kept = stored.kept_document() if stored is not None else None
    if kept is not None:
        if (yield from _against_kept(fileobj, path if large else None, url, unit, stored, kept)):
            return
    if stored is not None and large:
        yield from _read_in_two(fileobj, path, url, unit, stored)
        return
    document, base = _opened(fileobj, url)
    yield from _document_items(document)
    for section, suffix in ORDER:
        yield from _scan(document.entries(section), unit, base, section, suffix, stored)


def _opened(fileobj: BinaryIO, url: str) -> tuple[Document, str]:
    """The checked document and where its package files live."""
    document = Document(fileobj, url)
    info = document.value("info")
    if info is not None and not isinstance(info, dict):
        raise FormatError(f"{url} [info]", "must be an object")
    return document, base_url(url, (info or {}).get("base_url"))


def _sections_decoder(sections: tuple[str, ...]) -> msgspec.json.Decoder:
    """Reads a document for `info` and the raw entries of `sections` only (the others are
    checked, not kept)."""
    fields = [("info", Any, None)] + [
        (f"s{i}", dict[str, Raw], msgspec.field(default_factory=dict)) for i in range(len(sections))
    ]
    rename = {f"s{i}": section for i, section in enumerate(sections)}
    return msgspec.json.Decoder(msgspec.defstruct("KeptSections", fields, rename=rename))


_KEPT = {
    sections: _sections_decoder(sections)
    for sections in ((ORDER[0][0],), (ORDER[1][0],), (ORDER[0][0], ORDER[1][0]))
}

#: section -> filename -> hash of the raw entry
Hashes = dict[str, dict[str, int]]


def _kept_entries(old: BinaryIO, url: str, sections: list[str]) -> tuple[str, Hashes] | None:
    """The kept document `old`: where its files lived, and for each of `sections`
    filename -> hash of the raw entry (one pass, no record parsed); None if it cannot be
    read. Hashes, not views of the mapped file: it is released before the new document is
    mapped, so the two never count in memory together. (`hash` of bytes is salted per
    process: both documents are hashed in the same one.)"""
    try:
        kept = _KEPT[tuple(sections)].decode(mapped(old))
    except (OSError, ValueError, msgspec.DecodeError):
        return None
    info = {} if kept.info is None else kept.info
    if not isinstance(info, dict):
        return None
    entries = {
        section: {filename: hash(bytes(raw)) for filename, raw in getattr(kept, f"s{i}").items()}
        for i, section in enumerate(sections)
    }
    return base_url(url, info.get("base_url")), entries


def _compared(entries: dict[str, Raw], old: dict[str, int]) -> tuple[list, int, list[str]]:
    """A section's (filename, raw) whose bytes changed or are new, how many are the same, and
    the filenames no longer listed."""
    found = [
        (filename, raw)
        for filename, raw in entries.items()
        if old.get(filename) != hash(bytes(raw))
    ]
    gone = [filename for filename in old if filename not in entries]
    return found, len(entries) - len(found), gone


def _compare_in_child(
    receive: Receive, kept: str, path: str, url: str, section: str
) -> tuple[list, int, list[str]] | FormatError | None:
    """In the child: `_compared` for one section of the kept document and the new one at
    `path`, the changed entries as bytes; None if the kept one cannot be read (the parent
    then compares the section itself), a FormatError returned, raised there."""
    try:
        with open(kept, "rb") as old:
            before = _kept_entries(old, url, [section])
    except OSError:
        return None
    if before is None:
        return None
    try:
        with open(path, "rb") as fileobj:
            entries = Document(fileobj, url).entries(section)
            found, same, gone = _compared(entries, before[1][section])
            return [(filename, bytes(raw)) for filename, raw in found], same, gone
    except FormatError as exc:
        return exc


def _read_changes(
    document: Document,
    base: str,
    unit: str,
    before: Hashes,
    stored: StoredEntries,
    child: Child | None = None,
    old: BinaryIO | None = None,
) -> Iterator[Item]:
    """`read_repodata` against the kept document the stored rows match: an entry whose raw
    bytes are the same is stored as it is (counted, not parsed); the others are digested as
    usual, and entries no longer listed are left to be removed. A section not in `before` is
    compared by the `child` (or here, if it fails, with the kept document `old`)."""
    yield from _document_items(document)
    changed, unchanged, gone = [], 0, []
    for section, suffix in ORDER:
        if section in before:
            found, same, missing = _compared(document.entries(section), before.pop(section))
        else:
            found, same, missing = _from_child(child, document, section, old)
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
    fileobj: BinaryIO, path: str | None, url: str, unit: str, stored: StoredEntries, kept: str
) -> Generator[Item, None, bool]:
    """`_read_changes` against the kept document at `kept`; False (nothing yielded) if it
    cannot be compared with: unreadable, or files listed elsewhere. A large document (its
    `path` given) has its second section compared by a child process meanwhile."""
    try:
        old = open(kept, "rb")  # noqa: SIM115 - open till the end: the child's fallback reads it
    except OSError:
        return False
    child = _started(_compare_in_child, kept, path, url, ORDER[1][0]) if path else None
    try:
        with old:
            sections = [section for section, _ in ORDER[: 1 if child else 2]]
            before = _kept_entries(old, url, sections)
            if before is None:
                return False
            kept_base, entries = before
            document, base = _opened(fileobj, url)
            if kept_base != base:  # every entry's location changed: compared by digest
                return False
            yield from _read_changes(document, base, unit, entries, stored, child, old)
            return True
    finally:
        if child is not None:
            child.close()


def _from_child(
    child: Child | None, document: Document, section: str, old: BinaryIO
) -> tuple[list, int, list[str]]:
    """The child's comparison of `section`; done here if the child failed."""
    result = None
    if child is not None:
        try:
            result = child.result()
        except ChildFailed:
            pass
    if isinstance(result, FormatError):
        raise result
    if result is not None:
        return result
    before = _kept_entries(old, document.url, [section])
    if before is None:  # read a moment ago, unreadable now: only a failing disk does that
        raise FormatError(document.url, "the last document read cannot be compared with")
    return _compared(document.entries(section), before[1][section])


def _document_items(document: Document) -> Iterator[UnitExtras | Rejected]:
    """What the check of the document found: the extras to keep (with `info.base_url`), then
    each key left out (counted on the run)."""
    extras, left_out = document.check()
    info = document.value("info")
    base = info.get("base_url") if isinstance(info, dict) else None
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
            child = _sent(child, known if split else None)
            del known
        del digests
        document, base = _opened(fileobj, url)
    except BaseException:
        if child is not None:
            child.close()
        raise
    result: Any = None
    try:
        yield from _document_items(document)
        yield from _scan(document.entries(first), unit, base, first, first_suffix, stored)
        if child is not None and split:
            try:
                result = child.result()
            except ChildFailed:
                result = None  # its work is done here below
    finally:
        if child is not None:
            child.close()
    if isinstance(result, FormatError):
        raise result
    if result is None:
        yield from _scan(document.entries(second), unit, base, second, second_suffix, stored)
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
    """In the child: given the stored digests of `section` by the parent (None: nothing to
    do), digest it and return what is unchanged ((filename, digest)) and what is not
    ((filename, compact JSON or None if PSM cannot hold it, digest)); a FormatError is
    returned, raised there."""
    known = receive()
    if known is None:
        return None
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
    except FormatError as exc:
        return exc
    return unchanged, changed

"""Reading a conda subdir's repodata.json: checked as a whole, then streamed section by section.

First the whole document is read once to check it (see `conda_document`: a truncated or
malformed one fails before any record is yielded), which yields its extras as UnitExtras and
the top-level keys left out as Rejected. Then each section is a streaming pass (ijson's C
backend), so memory stays at one record whatever the document's size. Entries are digested as
parsed, before any check: on a re-sync almost every entry is current and costs little more than
parsing.

A large subdir uses the second core (see `isolation`): a child process checks the document
while this one reads the stored digests; on a re-sync (many stored) the child then scans
`packages.conda` while this process scans `packages`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson
import orjson

from .base import (
    FormatError,
    PackageRecord,
    Rejected,
    StoredEntries,
    Unchanged,
    UnitExtras,
    entry_digest,
)
from .conda_document import PARSE_BUFFER, check_document
from .conda_records import SECTIONS, base_url, entry_record
from .isolation import Child, ChildFailed, Receive

#: A document this large is checked by a child process, in parallel with the database read.
PARALLEL_BYTES = 16 * 1024 * 1024
#: A re-sync of a subdir with this many stored records also scans its sections in parallel.
PARALLEL_FROM = 50_000

Item = PackageRecord | Rejected | Unchanged | UnitExtras

_MISSING = object()


def read_repodata(
    fileobj: BinaryIO, url: str, unit: str, stored: StoredEntries | None = None
) -> Iterator[Item]:
    """The items of a subdir's repodata.json (see the module's docstring)."""
    fileobj.seek(0)
    if not fileobj.read(4096).lstrip().startswith(b"{"):
        raise FormatError(url, "repodata must be a JSON object")
    info = _first(fileobj, "info", url)
    if info is not None and not isinstance(info, dict):
        raise FormatError(f"{url} [info]", "must be an object")
    base = base_url(url, (info or {}).get("base_url"))
    path = getattr(fileobj, "name", None)
    if (
        stored is not None
        and isinstance(path, str)
        and os.path.exists(path)
        and os.path.getsize(path) >= PARALLEL_BYTES
    ):
        yield from _read_in_two(fileobj, path, url, unit, base, stored)
        return
    yield from _document_items(*check_document(fileobj, url))
    for section, suffix in SECTIONS:
        yield from _scan(fileobj, url, unit, base, section, suffix, stored)


def _first(fileobj: BinaryIO, prefix: str, url: str, missing: Any = None) -> Any:
    """The first value at `prefix`; stops reading as soon as it is found (info comes first)."""
    fileobj.seek(0)
    try:
        items = ijson.items(fileobj, prefix, use_float=True, buf_size=PARSE_BUFFER)
        return next(items, missing)
    except ijson.JSONError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None


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
    stored: StoredEntries | None,
) -> Iterator[PackageRecord | Rejected | Unchanged]:
    location, blake2b, from_bytes, dumps = (
        base.encode(),
        hashlib.blake2b,
        int.from_bytes,
        orjson.dumps,
    )
    is_current = stored.is_current if stored is not None else None
    for filename, record in _entries(fileobj, url, section):
        raw = dumps(record)
        digest = blake2b(raw, digest_size=8)  # `entry_digest`, written out: once per entry
        digest.update(location)
        digest = from_bytes(digest.digest(), "big", signed=True)
        if is_current is not None and is_current(filename, digest):
            yield Unchanged(filename)
        else:
            yield entry_record(section, suffix, filename, record, unit, base, raw, digest)


def _digested(
    fileobj: BinaryIO, url: str, base: str, section: str, stored: StoredEntries
) -> Iterator[Unchanged | tuple[str, bytes, int]]:
    """A section's entries as `_scan` sees them, but those to take in only as compact
    (filename, raw JSON, digest): what is kept back until the document is checked stays a
    few hundred bytes an entry, not a record and its parsed dict."""
    location, blake2b, from_bytes, dumps = (
        base.encode(),
        hashlib.blake2b,
        int.from_bytes,
        orjson.dumps,
    )
    for filename, record in _entries(fileobj, url, section):
        raw = dumps(record)
        digest = blake2b(raw, digest_size=8)  # `entry_digest`, written out
        digest.update(location)
        digest = from_bytes(digest.digest(), "big", signed=True)
        if stored.is_current(filename, digest):
            yield Unchanged(filename)
        else:
            yield filename, _exact(raw), digest


def _exact(raw: bytes) -> bytes:
    """A copy of orjson's output that is only as large as its content: orjson's own buffer
    stays several KB (600,000 kept back would take GBs instead of ~300 MB)."""
    return bytes(memoryview(raw))


def _taken_in(
    items: list, section: str, suffix: str, unit: str, base: str
) -> Iterator[PackageRecord | Rejected | Unchanged]:
    """The items `_digested` kept back, each entry checked now (parsed again from its raw
    JSON: the same dict, as orjson writes what it reads back)."""
    for item in items:
        if isinstance(item, Unchanged):
            yield item
        else:
            filename, raw, digest = item
            record = orjson.loads(raw)
            yield entry_record(section, suffix, filename, record, unit, base, raw, digest)


def _read_in_two(
    fileobj: BinaryIO, path: str, url: str, unit: str, base: str, stored: StoredEntries
) -> Iterator[Item]:
    """`read_repodata` with a child process checking the document (and on a re-sync scanning
    the second section); without a child, or if it fails, all of it is done here."""
    first: list = []  # the first section (`_digested`), when scanned here while the child works
    split = False
    result: Any = None
    try:
        with Child(_check_in_child, path, url, base, SECTIONS[1][0]) as child:
            digests = stored.current_digests()  # the database read overlaps the child's check
            split = len(digests) >= PARALLEL_FROM
            suffix = SECTIONS[1][1]
            child.send({f: d for f, d in digests.items() if f.endswith(suffix)} if split else None)
            if split:
                # Kept back until the child has checked the whole document.
                first = list(_digested(fileobj, url, base, SECTIONS[0][0], stored))
            result = child.result()
    except ChildFailed:
        result = None  # its work is done here below
    if result is None:
        yield from _document_items(*check_document(fileobj, url))
        if first:
            yield from _taken_in(first, *SECTIONS[0], unit, base)
        else:
            yield from _scan(fileobj, url, unit, base, *SECTIONS[0], stored)
        yield from _scan(fileobj, url, unit, base, *SECTIONS[1], stored)
        return
    if isinstance(result, FormatError):
        raise result
    checked, unchanged, changed = result
    yield from _document_items(*checked)
    if not split:
        for section, suffix in SECTIONS:
            yield from _scan(fileobj, url, unit, base, section, suffix, stored)
        return
    yield from _taken_in(first, *SECTIONS[0], unit, base)
    del first
    for filename, digest in unchanged:
        stored.is_current(filename, digest)  # marks it seen
        yield Unchanged(filename)
    del unchanged
    yield from _taken_in(changed, *SECTIONS[1], unit, base)


def _check_in_child(receive: Receive, path: str, url: str, base: str, section: str) -> Any:
    """In the child: check the document, then, given the stored digests of `section` (None:
    the parent scans every section itself), digest that section and return what is unchanged
    and what changed ((filename, raw JSON, digest)); a FormatError is returned, raised there."""
    try:
        with open(path, "rb") as fileobj:
            checked = check_document(fileobj, url)
            known = receive()
            unchanged, changed = [], []
            if known is not None:
                for filename, record in _entries(fileobj, url, section):
                    raw = orjson.dumps(record)
                    digest = entry_digest(raw, base)
                    if known.get(filename) == digest:
                        unchanged.append((filename, digest))
                    else:  # compact: the parent parses the raw JSON again
                        changed.append((filename, _exact(raw), digest))
    except FormatError as exc:
        return exc
    return checked, unchanged, changed

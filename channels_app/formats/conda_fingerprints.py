"""The fingerprints of a subdir document's entries, kept beside it for the next comparison.

A re-sync compares each entry of a subdir's new repodata.json with the last one read by a
fingerprint of its raw bytes (see `conda_repodata`). Working those out for the kept document
takes a pass over its hundreds of MB; so each read leaves those of the document it read beside
it, one file per section (`<document>.<section>.fp`, msgpack), and they are kept with it (a
fetched file's companions, see `mirrors_app.sync.fetch_state.hold_document`).

Fingerprints name the file they describe by its device, inode, size and modification time
(a kept document is the fetched file itself, linked, not copied). Those that are not the kept
file's (left by a read whose document was not kept, or beside a copy) are not used: the kept
document is read instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import msgspec
from xxhash import xxh3_64_intdigest

#: filename -> fingerprint of its raw entry
Entries = dict[str, int]


class _Saved(msgspec.Struct, array_like=True):
    document: tuple[int, int, int, int]  # device, inode, size, modification time (ns)
    base: str | None  # the document's `info.base_url`
    entries: Entries


_DECODER = msgspec.msgpack.Decoder(_Saved)
_ENCODER = msgspec.msgpack.Encoder()


def of(entries: Mapping[str, bytes | memoryview | msgspec.Raw]) -> Entries:
    """filename -> fingerprint of each raw entry of a section: XXH3, 64 bits, of its bytes
    read in place (no copy). Not a defence against upstream: a crafted collision only keeps
    the record PSM holds, which upstream itself wrote, and its file is still checked against
    the stored digests."""
    return {filename: xxh3_64_intdigest(raw) for filename, raw in entries.items()}


def suffix(section: str) -> str:
    """What a section's fingerprints add to the name of the document they describe."""
    return f".{section}.fp"


def save(document: str, section: str, base: object, entries: Entries) -> None:
    """Leave the fingerprints of a section of the document at `document` beside it (`base`:
    its `info.base_url`); nothing if they cannot be written (the next read works them out)."""
    target = document + suffix(section)
    temporary = target + ".tmp"
    try:
        saved = _Saved(_identity(document), base if isinstance(base, str) else None, entries)
        with open(temporary, "wb") as out:
            out.write(_ENCODER.encode(saved))
        os.replace(temporary, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def load(document: str, section: str) -> tuple[str | None, Entries] | None:
    """The fingerprints of a section of the document at `document` (and its `info.base_url`),
    if those beside it are this very file's; None otherwise."""
    try:
        with open(document + suffix(section), "rb") as saved_file:
            saved = _DECODER.decode(saved_file.read())
        if tuple(saved.document) != _identity(document):
            return None
    except (OSError, msgspec.DecodeError):
        return None
    return saved.base, saved.entries


def _identity(path: str) -> tuple[int, int, int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns

"""Where each member of a published repodata.json's sections lies, kept for the next splice.

A publish splices the rows changed since the last one into the file it left (see
`conda_render.splice_sections`). Knowing only the sections' bounds, it has to ask the database
for each changed row's unchanged neighbours and then search the old file's bytes for them:
for a conda-forge subdir's 1% change, 24,000 index probes and a pass over 291 MB. Knowing the
length of every member, in order, it merges instead: each changed row's place is found by
binary search among the old file's file names, read where the lengths say they begin.

So each render whose members come in byte order of their keys leaves their lengths in a note
kept with the file it wrote (`publishing.keep_note`: 4 bytes a member, 2.4 MB at conda-forge
size). Where the database sorts file names by their bytes too
(`splice_changes.orders_by_bytes`), a splice told what changed merges by the note on the old
file, and one that checks (`splice_changes`) asks for gaps as before and works out the lengths
after; either leaves a note on the file it writes. A note that is not this file's, does not
add up to its sections or fails its digest, or a member that does not begin where it says,
makes the splice ask for gaps; the merge does not place a name that begins a neighbour's
("a" and "a!b" sort otherwise by member key than by file name).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import msgspec
import orjson

#: A member's first bytes: its file name as a JSON string (a safe file name needs no escape).
Key = bytes
#: A run of the old file's members (byte offsets), or a new member.
Piece = tuple[int, int] | bytes

#: Members between two whose names the merge keeps in memory (the rest are read in place).
STRIDE = 32
#: The longest file name a member may begin with (quotes included).
_LONGEST_KEY = 257
_QUOTE, _COMMA = ord('"'), ord(",")


def key(filename: str) -> Key:
    """What a member for `filename` begins with, as the merge compares it."""
    return orjson.dumps(filename)


class MemberList:
    """The lengths of a section's members as a render writes them (`add_lines`, `add`), and
    whether their file names came in byte order (`ordered`); lengths are kept only while
    they did."""

    def __init__(self) -> None:
        self.lengths: array | None = array("I")
        self._last = b""

    @property
    def ordered(self) -> bool:
        return self.lengths is not None

    def add_lines(self, block: bytes) -> None:
        """Members given as lines, each ending with a line break (a COPY's block)."""
        if self.lengths is None:
            return
        lines = block.split(b"\n")
        lines.pop()  # after the last line break
        if lines and (lines[0] <= self._last or lines != sorted(lines)):
            self.lengths = None  # (a line begins with its member's key: the keys' order)
            return
        if lines:
            self._last = lines[-1]
            self.lengths.extend(map(len, lines))

    def add(self, member: bytes) -> None:
        self.add_lines(member + b"\n")


def merge_section(
    data: Any, start: int, end: int, lengths: array, changes: Sequence[tuple[Key, bytes | None]]
) -> tuple[list[Piece], array] | None:
    """The section whose members lie in `data[start:end]`, `lengths` long each, with `changes`
    (each changed row's key and its member now, None where it is no longer served; in key
    order, each key once) merged in: its pieces (see `conda_render.splice_sections`) and the
    lengths of its members then; None if the members do not lie where `lengths` say, or a
    change cannot be placed by bytes."""
    offsets = _offsets(start, end, lengths)
    if offsets is None:
        return None
    try:
        return _merged(data, end, lengths, offsets, changes)
    except _Unmerged:
        return None


class _Unmerged(Exception):
    """A member not where the lengths say, or a change the merge cannot place by bytes."""


def _merged(
    data: Any, end: int, lengths: array, offsets: list[int], changes: Sequence
) -> tuple[list[Piece], array]:
    """`merge_section`, where the members begin at `offsets`; raises `_Unmerged`."""
    count = len(lengths)

    def key_at(index: int) -> Key:
        at = offsets[index]
        if data[at] != _QUOTE or (index and data[at - 1] != _COMMA):
            raise _Unmerged
        close = data.find(b'"', at + 1, min(at + _LONGEST_KEY, end))
        if close < 0:
            raise _Unmerged
        return data[at : close + 1]

    anchors = [key_at(index) for index in range(0, count, STRIDE)]
    pieces: list[Piece] = []
    merged = array("I")
    kept = 0  # the first old member not yet passed on
    last = None  # the key of the change before
    for changed, member in changes:
        if b"\\" in changed:
            raise _Unmerged  # a name JSON escapes (none a conda record may have): sorts otherwise
        block = bisect_right(anchors, changed) - 1
        at = 0
        if block >= 0:
            lo = block * STRIDE
            at = bisect_left(range(lo, min(lo + STRIDE, count)), changed, key=key_at) + lo
        if at < kept:
            raise _Unmerged  # not in key order
        same = at < count and key_at(at) == changed
        # A name that begins another sorts by bytes as the database sorts it, unless what
        # follows it in the other sorts before a quote ("a!" before "a"): not merged.
        around = [last, key_at(at - 1) if at else None, None if same or at == count else key_at(at)]
        if any(other is not None and _prefixed(changed, other) for other in around):
            raise _Unmerged
        last = changed
        if at > kept:
            key_at(kept)  # where the run begins: a member
            pieces.append((offsets[kept], offsets[at] - 1))
            merged.extend(lengths[kept:at])
        if member is not None:
            pieces.append(member)
            merged.append(len(member))
        kept = at + 1 if same else at
    if kept < count:
        key_at(kept)
        pieces.append((offsets[kept], end))
        merged.extend(lengths[kept:])
    return pieces, merged


def lengths_after(start: int, end: int, lengths: array, pieces: list[Piece]) -> array | None:
    """The lengths of the members of a section spliced into `pieces` (see
    `conda_render.splice_sections`), its members in the old file being `lengths` long; None if
    a run of the old file does not begin and end where its members do."""
    offsets = _offsets(start, end, lengths)
    if offsets is None:
        return None
    after = array("I")
    for piece in pieces:
        if isinstance(piece, bytes):
            after.append(len(piece))
            continue
        first, past = bisect_left(offsets, piece[0]), bisect_left(offsets, piece[1] + 1)
        if past >= len(offsets) or offsets[first] != piece[0] or offsets[past] != piece[1] + 1:
            return None
        after.extend(lengths[first:past])
    return after


def _offsets(start: int, end: int, lengths: array) -> list[int] | None:
    """Where each member begins, and one past the last (where the next would, after a comma);
    None if the members do not fill the section from `start` to `end`."""
    offsets = list(accumulate(map((1).__add__, lengths), initial=start))
    return offsets if offsets[-1] == (end + 1 if lengths else start) else None


def _prefixed(one: Key, other: Key) -> bool:
    """Whether either key's file name begins the other's (and they differ)."""
    one, other = one[:-1], other[:-1]
    return one != other and (one.startswith(other) or other.startswith(one))


# --- Kept with the file (`PackageIndexSource.render_ended`'s note) ------------------------------


class _Note(msgspec.Struct, array_like=True):
    sections: list[tuple[int, int]]
    lengths: list[bytes]  # array("I") of each section
    digest: bytes  # of the lengths: a note damaged on disk is not used


_DECODER = msgspec.msgpack.Decoder(_Note)
_ENCODER = msgspec.msgpack.Encoder()


def note(sections: Sequence[tuple[int, int]], lengths: Sequence[array]) -> bytes:
    """The note kept with a rendered file: its sections' bounds and members' lengths."""
    raw = [a.tobytes() for a in lengths]
    return _ENCODER.encode(_Note([tuple(s) for s in sections], raw, _digest(raw)))


def read(note: bytes, sections: Sequence[tuple[int, int]]) -> list[array] | None:
    """The lengths of each section's members a note gives, if it is one on a file with these
    sections (and their members add up to them); None otherwise."""
    try:
        kept = _DECODER.decode(note)
    except msgspec.DecodeError:
        return None
    if [tuple(s) for s in kept.sections] != [tuple(s) for s in sections]:
        return None
    if kept.digest != _digest(kept.lengths):
        return None
    lengths = []
    for raw, (start, end) in zip(kept.lengths, sections, strict=False):
        section = array("I")
        if len(raw) % section.itemsize:
            return None
        section.frombytes(raw)
        if sum(section) + max(len(section) - 1, 0) != end - start:
            return None
        lengths.append(section)
    return lengths if len(lengths) == len(sections) else None


def _digest(lengths: list[bytes]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for raw in lengths:
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.digest()

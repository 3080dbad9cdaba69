"""A repodata.json read while it is still being written: its package sections in batches.

A large subdir's re-sync compares every entry of the new document with the kept one's (see
`conda_repodata`). Read whole, that waits for the last byte and then takes a pass over the
document or two. Followed instead as its file grows, only the last batch and the part after
the last section are left when the download ends.

Where a batch may end is found by the document's layout, not by parsing: in a pretty-printed
document (as conda-index and conda-forge write them) every top-level key and every entry of a
section begins on a line of its own, indented alike, and no JSON string holds a line break.
What the layout suggests is then proved by parsing each part (msgspec) as it arrives:

- the part before a section, closed with the section empty (`..."packages": {}}`): it parses
  only if the section's key is one of the document's own;
- each batch of entries, as an object (`{...}`): a batch that parses ends where an entry
  does, so the next batch begins with one (and the batches, together, are the section);
- the part after a section, its comma made an opening brace (`{ "removed": ...}`), up to the
  next section or the end of the document.

Together the parts are the document, so it is valid JSON, and the entries read are its
sections'. A document laid out otherwise (compact JSON, a section's key given twice, a batch
or part that does not parse) raises `Unfollowed`: it is then read whole, as before.

Two readers may share a document, one section each (`own`), so that two cores read it. The
one whose section comes first proves what precedes the other's, up to its key (`next_at`),
and stops there. The other looks for its own key past the first section without proving what
lies between (`own_at`), then proves its section and the rest. The two readings are the
document's only where the two places agree (see `conda_repodata`), and each counts for what
it proved (`proved`): a key given twice before the second section has its last value in the
first reader's reading only.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Callable

import msgspec

from .conda_records import SECTIONS

Raw = msgspec.Raw

#: A section's entries are parsed in batches of about this many bytes as they arrive.
BATCH_BYTES = 8 * 1024 * 1024
#: At most this much of the file is read at once (an entry longer is not followed).
WINDOW_BYTES = 4 * BATCH_BYTES
#: A part between sections is searched for the next section's start this much at a time.
SEARCH_BYTES = 1024 * 1024
#: A part between sections (`info`, `removed`, keys PSM does not know) is held whole to be
#: parsed: past this size the document is read whole instead.
PART_BYTES = 64 * 1024 * 1024

_ENTRIES = msgspec.json.Decoder(dict[str, Raw])
_KEYS = {f'"{section}"'.encode(): section for section, _ in SECTIONS}
#: A package section's key on a line of its own (group 1: its indentation) and its opening
#: brace.
_SECTION_START = re.compile(
    rb"\n([ \t]*)(" + b"|".join(re.escape(key) for key in _KEYS) + rb")[ \t]*:[ \t]*\{"
)
_SPACE = b" \t\r\n"


class Unfollowed(Exception):
    """The document is not laid out to be followed, or a part of it does not parse."""


def indentation(head: bytes) -> bytes | None:
    """The indentation of the top-level keys of a document beginning with `head`, if it is
    pretty-printed (an opening brace, then a line break); None if it is not, or if `head`
    does not say yet."""
    stripped = head.lstrip(_SPACE)
    if not stripped.startswith(b"{"):
        return None
    after = stripped[1:]
    space = after[: len(after) - len(after.lstrip(_SPACE))]
    if len(space) == len(after) or b"\n" not in space:  # all space so far, or compact
        return None
    return space.rsplit(b"\n", 1)[1]


class DocumentStream:
    """Follows the repodata.json at `path` as it is written (front to back, once):
    `advance()` reads what has arrived, handing each batch of a section's entries to
    `entries(section, batch)`; `finish()`, once the file is whole, reads the rest and
    returns the top-level values other than the sections, as bytes, in document order (a
    section: `b"{}"`, its entries handed over already). Raises `Unfollowed`.

    `own`: the one section to read (the other is another reader's, see the module): the
    first section met (`first`) is then followed by the other's key at `next_at` (where its
    line begins; nothing is read past it), or, if the first is the other's, own's key was
    found at `own_at`, unproved. Both stay None where there is no second section."""

    def __init__(
        self, path: str, entries: Callable[[str, dict[str, Raw]], None], own: str | None = None
    ) -> None:
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in `close`
        self.entries = entries
        self.own = own
        self.first: str | None = None  # the first section met
        self.own_at: int | None = None
        self.next_at: int | None = None
        self.skipping = False  # looking for own's key past the other's section
        self.stopped = False  # at the other's key, past own's section: nothing more to read
        self.indent: bytes | None = None  # of the top-level keys
        self.top: dict[str, bytes] = {}
        self.later: dict[str, bytes] = {}  # `top`'s values from own's key on, past `own_at`
        self.read: set[str] = set()  # the sections read
        self.part_from = 0  # where the part after the last section (or the document) begins
        self.searched = 0  # how far the part has been searched for a section's start
        self.section: str | None = None  # the section being read
        self.at = 0  # where its next batch begins
        self.separator = b""  # what comes between two of its entries
        self.closing = b""  # what ends it

    def close(self) -> None:
        self.file.close()

    def advance(self, whole: bool = False) -> None:
        """Read what has been written (`whole`: all of it is; then anything unread is read,
        however little)."""
        size = os.fstat(self.file.fileno()).st_size
        if self.indent is None:
            self.indent = indentation(self._read(0, min(size, 4096)))
            if self.indent is None:
                if whole or size >= 4096:
                    raise Unfollowed("not pretty-printed")
                return
        while self._step(size, whole):
            pass

    def finish(self) -> dict[str, bytes]:
        """Read the rest of the whole document; its top-level values (see the class)."""
        self.advance(whole=True)
        if self.stopped or self.skipping:  # the rest is the other reader's
            return self.top
        if self.section is not None:
            raise Unfollowed(f"{self.section} does not end")
        size = os.fstat(self.file.fileno()).st_size
        if size - self.part_from > PART_BYTES:
            raise Unfollowed("too much after the last section")
        part = self._read(self.part_from, size - self.part_from)
        start = len(part) - len(part.lstrip(_SPACE))
        if self.part_from == 0:
            values = self._parsed(part)  # no package section at all
        elif part[start : start + 1] == b",":
            values = self._parsed(b"{" + part[start + 1 :])
        elif part[start : start + 1] == b"}" and not part[start + 1 :].strip(_SPACE):
            values = {}
        else:
            raise Unfollowed("the document does not end after its last section")
        self._add(values)
        return self.top

    def proved(self) -> dict[str, bytes]:
        """The top-level values this reading vouches for (after `finish`), in document order:
        all it read, or, where its own section came second, those from its key on (nothing,
        if it found none). What comes before is the other reader's to prove: a key given
        there twice has its last value only in the other's reading."""
        if self.own is None or self.first in (None, self.own):
            return self.top
        return self.later

    def _step(self, size: int, whole: bool) -> bool:
        """One batch of the section being read, or the part up to the next section's start;
        whether there may be more to read now."""
        if self.stopped:
            return False
        if self.skipping:
            return self._own_section(size, whole)
        if self.section is None:
            return self._next_section(size)
        return self._batch(size, whole)

    def _next_section(self, size: int) -> bool:
        begin = max(self.part_from, self.searched - 64)  # a start may straddle two reads
        window = self._read(begin, min(size - begin, SEARCH_BYTES))
        self.searched = begin + len(window)
        for match in _SECTION_START.finditer(window):
            if match.group(1) == self.indent:
                break
        else:
            if self.searched - self.part_from > PART_BYTES:
                raise Unfollowed("too much between sections")
            return self.searched < size
        section = _KEYS[match.group(2)]
        brace = begin + match.end() - 1
        part = self._read(self.part_from, brace + 1 - self.part_from)
        if self.part_from:  # after a section: its comma becomes the opening brace
            start = len(part) - len(part.lstrip(_SPACE))
            if part[start : start + 1] != b",":
                raise Unfollowed("no comma after a section")
            part = b"{" + part[start + 1 :]
        values = self._parsed(part + b"}}")
        if next(reversed(values), None) != section or section in self.top:
            raise Unfollowed(f"{section} given twice")
        del values[section]
        self._add(values)
        self.top[section] = b"{}"
        if self.first is None:
            self.first = section
        if self.own is not None and section != self.own:  # the other reader's
            if self.own in self.read:
                self.next_at, self.stopped = begin + match.start(), True
                return False
            self.skipping, self.searched = True, brace + 1
            return True
        self._begin(section, brace)
        return True

    def _begin(self, section: str, brace: int) -> None:
        """Read the section whose opening brace is at `brace`."""
        self.section, self.at, self.separator = section, brace + 1, b""
        self.closing = b"\n" + self.indent + b"}"

    def _own_section(self, size: int, whole: bool) -> bool:
        """Look for own's key past the other reader's section (what lies between is the
        other's to prove); whether there may be more to read now."""
        key = b"\n" + self.indent + f'"{self.own}"'.encode()
        begin = self.searched
        if size - begin < len(key):
            return False
        # Searched where it lies (mapped, not copied): the other's section is most of it.
        view, offset = self._mapped(begin, size, mmap.ACCESS_READ)
        with view:
            found = view.find(key, begin - offset)
        if found < 0:  # the next search begins where a key may straddle the two
            self.searched = size - len(key) + 1
            return False
        found += offset
        head = self._read(found, 256)
        match = _SECTION_START.match(head)
        if match is None:
            if len(head) < 256 and not whole:
                self.searched = found  # the rest of its line has not arrived
                return False
            raise Unfollowed(f"{self.own} not laid out as a section")
        self.skipping, self.own_at = False, found
        self.top[self.own] = self.later[self.own] = b"{}"
        self._begin(self.own, found + match.end() - 1)
        return True

    def _batch(self, size: int, whole: bool) -> bool:
        if not self.separator:  # learnt from the section's first entry
            head = self._read(self.at, min(size - self.at, 4096))
            space = head[: len(head) - len(head.lstrip(_SPACE))]
            if len(space) == len(head):
                return False  # not arrived yet
            if head[len(space) : len(space) + 1] == b"}":  # an empty section
                return self._ended(self.at + len(space))
            if b"\n" not in space:
                raise Unfollowed("a section's entries are not on lines of their own")
            self.separator = b"," + space + b'"'
        if size - self.at < BATCH_BYTES and not whole:
            return False
        # Mapped privately, the byte before the batch (the section's brace or the comma
        # after the last batch) made an opening brace and the one where it ends a closing
        # one: parsed where it lies, without a copy.
        start = self.at - 1
        view, offset = self._mapped(start, min(size, start + WINDOW_BYTES), mmap.ACCESS_COPY)
        first = start - offset
        # A batch up to the window's last separator, if it parses, is entries only: the
        # section's end is looked for only where it does not (or where there is none).
        cut = view.rfind(self.separator, first + 1)
        batch = self._batch_to(view, first, cut) if cut >= 0 else None
        if batch is not None:
            self.entries(self.section, batch)
            self.at = offset + cut + 1  # past the comma
            return True
        end = view.find(self.closing, first + 1)
        if end < 0:
            if cut >= 0:
                raise Unfollowed("entries that do not parse")
            return False  # the next separator has not arrived yet
        batch = self._batch_to(view, first, end)
        if batch is None:
            raise Unfollowed("entries that do not parse")
        self.entries(self.section, batch)
        return self._ended(offset + end + len(self.closing) - 1)

    def _mapped(self, start: int, end: int, access: int) -> tuple[mmap.mmap, int]:
        """The file from `start` to `end` mapped (from the page boundary at or before
        `start`), and the file offset the mapping begins at."""
        offset = start - start % mmap.ALLOCATIONGRANULARITY
        return mmap.mmap(self.file.fileno(), end - offset, offset=offset, access=access), offset

    def _batch_to(self, view: mmap.mmap, first: int, cut: int) -> dict[str, Raw] | None:
        """The entries between `first` (a brace or comma) and `cut` (where a separator or the
        section's end begins), parsed in place; None if they do not parse."""
        view[first], saved, view[cut] = ord("{"), view[cut], ord("}")
        try:
            return _ENTRIES.decode(memoryview(view)[first : cut + 1])
        except msgspec.DecodeError:
            view[cut] = saved
            return None

    def _ended(self, brace: int) -> bool:
        """The section being read ends with the brace at `brace`."""
        self.read.add(self.section)
        self.section, self.part_from, self.searched = None, brace + 1, brace + 1
        return True

    def _add(self, values: dict[str, Raw]) -> None:
        for key, raw in values.items():
            if key in _KEYS.values():  # a section not laid out as one, or given twice
                raise Unfollowed(f"{key} not on lines of its own")
            self.top[key] = bytes(raw)
            if self.own_at is not None:
                self.later[key] = self.top[key]

    def _parsed(self, part: bytes | memoryview) -> dict[str, Raw]:
        try:
            return _ENTRIES.decode(part)
        except msgspec.DecodeError as exc:
            raise Unfollowed(str(exc)) from None

    def _read(self, offset: int, length: int) -> bytes:
        return os.pread(self.file.fileno(), max(length, 0), offset)

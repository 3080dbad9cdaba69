"""Rendering a conda channel: `<subdir>/repodata.json` (+ `.zst`) and `channeldata.json`.

`noarch` is always present. `base_url` is never written: package URLs are relative to the
repodata, so clients always come back to PSM. The `.bz2` copies older clients ask for are made
after the publish (`FormatCapabilities.bz2_copies`). Each subdir also gets its
`repodata.jlap` (see `conda_jlap`): a splice adds the patch of what it changed, a whole render
starts the log anew. A withdrawal rewrites published files
(`withdraw_channel`) without rendering them from the channel's packages.

A subdir's sections come from the database in blocks (`PackageIndexSource.json_members`, a
COPY of the rows), not row by row.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import zstandard

from . import conda_jlap as jlap
from . import conda_members
from .base import Emit, FormatError, Gap, IndexSource, Previous, PublishedIndex
from .conda_document import KNOWN_KEYS, holds_packages
from .conda_members import Piece
from .conda_records import SECTIONS, SUFFIXES

#: zstd's level 1: of 600,000 conda-forge-like records (291 MB), 0.73 s of CPU in 2 threads and
#: 49.8 MB, where level 3 took 1.06 s and 54.0 MB (benchmarks/README.md). Every publish of the
#: subdir compresses the whole file, so its CPU is a re-sync's largest single cost.
ZSTD_LEVEL = 1


CHANNELDATA = "channeldata.json"
LOG_TYPE = "text/plain; charset=utf-8"


def render_channel(source: IndexSource, emit: Emit) -> None:
    """Write every subdir's repodata (plain and zstd, in one pass) and its log, and
    channeldata.json."""
    subdirs = sorted(set(source.units()) | {"noarch"})
    names: dict[str, set[str]] = {}
    for subdir in subdirs:
        hasher = jlap.document_hash()
        with (
            emit(f"{subdir}/repodata.json", "application/json") as plain,
            emit(f"{subdir}/repodata.json.zst", "application/zstd") as packed,
        ):
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
            with (
                compressor.stream_writer(packed, closefd=False) as zst,
                _Background(plain) as behind,
                _Background(_Hashing(hasher)) as hashing,
            ):
                out = _Buffered((behind, hashing, zst))
                change = _write_repodata(out, subdir, source, names)
                out.flush()
        latest = hasher.hexdigest()
        if change is None:
            log = jlap.started(latest)
        else:
            log, operations = change
            log = jlap.appended(log, None, latest, operations, jlap.log_limit(out.written))
        with emit(_log_path(subdir), LOG_TYPE) as out_log:
            out_log.write(log)
    channeldata = {
        "channeldata_version": 1,
        "packages": {name: {"subdirs": sorted(s)} for name, s in sorted(names.items())},
        "subdirs": subdirs,
    }
    _write_channeldata(channeldata, emit)


def _write_channeldata(channeldata: Mapping[str, Any], emit: Emit) -> None:
    with emit(CHANNELDATA, "application/json") as out:
        out.write(orjson.dumps(channeldata, option=orjson.OPT_INDENT_2))


def _log_path(subdir: str) -> str:
    return f"{subdir}/{jlap.NAME}"


def _write_repodata_files(
    subdir: str, data: bytes, emit: Emit, log: bytes | None = None
) -> list[str]:
    """Emit a subdir's repodata.json, its `.zst` copy and its `log`; return their paths."""
    path = f"{subdir}/repodata.json"
    with emit(path, "application/json") as out:
        out.write(data)
    with emit(path + ".zst", "application/zstd") as out:
        out.write(zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).compress(data))
    if log is None:
        return [path, path + ".zst"]
    with emit(_log_path(subdir), LOG_TYPE) as out:
        out.write(log)
    return [path, path + ".zst", _log_path(subdir)]


class _Hashing:
    """A hash fed as a file is written (for `_Background`)."""

    def __init__(self, hasher: Any) -> None:
        self.write = hasher.update


class _Background:
    """Pass writes on to `target` in a thread: the plain copy is hashed and written while the
    calling thread compresses (both leave the interpreter free). Context manager: leaving it
    waits for the writes and raises what one raised."""

    def __init__(self, target: Any) -> None:
        self.target, self.error = target, None
        self.blocks: queue.Queue = queue.Queue(4)
        self.thread = threading.Thread(target=self._run, name="psm-render-write", daemon=True)

    def __enter__(self) -> _Background:
        self.thread.start()
        return self

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.blocks.put(data)

    def _run(self) -> None:
        while (data := self.blocks.get()) is not None:
            if self.error is None:
                try:
                    self.target.write(data)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self.error = exc

    def __exit__(self, *exc_info: object) -> None:
        self.blocks.put(None)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


class _Buffered:
    """Collect small writes and pass them on in ~1 MiB blocks to every target; count the
    bytes written (`written`)."""

    def __init__(self, targets: tuple[Any, ...]) -> None:
        self.targets, self.parts, self.size, self.written = targets, [], 0, 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        self.written += len(data)
        if self.size >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        block = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        for target in self.targets:
            target.write(block)
        self.parts, self.size = [], 0


def _write_repodata(
    out: _Buffered, subdir: str, source: IndexSource, names: dict[str, set[str]]
) -> tuple[bytes, bytes] | None:
    """Write the subdir's repodata.json to `out`; return how its log goes on, for
    `conda_jlap.appended`: the log published with the file spliced, and the patch; or None
    where the file was not spliced, or its patch cannot be told (the log then starts anew)."""
    path = f"{subdir}/repodata.json"
    if hasattr(source, "render_began"):
        source.render_began(path)
    previous = (
        source.previous(path, subdir, SUFFIXES, read_note=conda_members.read)
        if hasattr(source, "previous")
        else None
    )
    change = None
    try:
        splice = splice_sections(previous) if previous is not None else None
        spliced, lengths = splice if splice is not None else (None, None)
        dropped = _dropped_members(previous, spliced) if spliced is not None else None
        # The names for channeldata.json: those a splice changes, else asked meanwhile where
        # the source can (or collected from the documents as they are written).
        listed = (
            _spliced_names(source, path, subdir, previous, dropped) if dropped is not None else None
        )
        if spliced is not None and previous.damage():  # damaged: rendered whole (reported there)
            spliced = listed = dropped = lengths = None
        names_later = getattr(source, "names_later", None)
        later = names_later(subdir, SUFFIXES) if listed is None and names_later else None
        sections = []
        written = [conda_members.MemberList() for _ in SECTIONS] if spliced is None else []
        out.write(b'{"info":' + orjson.dumps({"subdir": subdir}))
        for index, (section, suffix) in enumerate(SECTIONS):
            out.write(b',"' + section.encode() + b'":{')
            start = out.written
            if spliced is None:
                blocks = _members(source, subdir, suffix, names, written[index])
            else:
                blocks = _spliced_blocks(previous.data, spliced[index])
            for block in blocks:
                out.write(block)
            sections.append((start, out.written))
            out.write(b"}")
        if written and all(members.ordered for members in written):
            lengths = [members.lengths for members in written]
        tail = _tail(source, subdir)
        if dropped is not None:
            old_tail = bytes(previous.data[previous.sections[-1][1] + 1 :])
            operations = _operations(dropped, spliced, old_tail, tail)
            log = _published_with(source, path, _log_path(subdir))
            if operations is not None and log is not None:
                change = (log, operations)
    finally:
        if previous is not None:
            previous.close()
    if hasattr(source, "render_ended"):
        source.render_ended(
            path,
            sections,
            spliced=spliced is not None,
            companions=[CHANNELDATA, _log_path(subdir)],
            # Where its members lie, for the next splice to merge by (`conda_members`).
            note=None if lengths is None else conda_members.note(sections, lengths),
        )
    if later is not None:
        listed = later()
    for name in listed or ():
        names.setdefault(name, set()).add(subdir)
    out.write(tail)
    return change


def _tail(source: IndexSource, subdir: str) -> bytes:
    """What follows the package sections in a subdir's repodata.json: `removed`, the top-level
    keys kept, the version, and the document's closing brace."""
    extras = source.unit_extras(subdir)
    removed = sorted(set(extras.get("removed", ())))
    parts = [b',"removed":' + orjson.dumps(removed)]
    for key, text in sorted(extras.get("top_level", {}).items()):
        # Served back as read; never in place of what PSM writes, nor a package section.
        if key not in KNOWN_KEYS and not holds_packages(key):
            parts.append(b"," + orjson.dumps(key) + b":" + text.encode())
    parts.append(b',"repodata_version":1}')
    return b"".join(parts)


def _published_with(source: IndexSource, path: str, companion: str) -> bytes | None:
    """`companion` as published with the file at `path`, where the source can say."""
    published_with = getattr(source, "published_with", None)
    return published_with(path, companion) if published_with is not None else None


# --- Splicing changed rows into the published repodata ----------------------------------------


def splice_sections(previous: Previous) -> tuple[list[list[Piece]], list | None] | None:
    """Each section's members as runs of the published file and new members, to be joined by
    commas: the old file without the members of the changed rows, with the members of those
    served now in their place; and where the old file's members were known (merged by them,
    `conda_members`), the lengths of each section's members after. None if the file does not
    hold what the changes say it should (then the file is rendered whole)."""
    spliced, lengths = [], []
    for index, ((start, end), changes) in enumerate(
        zip(previous.sections, previous.changes, strict=True)
    ):
        known = None if previous.members is None else previous.members[index]
        if changes.gaps is None:  # no gaps asked: merged by the old members' lengths
            rows = sorted((conda_members.key(name), member) for name, member in changes.rows)
            merged = conda_members.merge_section(previous.data, start, end, known, rows)
            pieces, after = merged if merged is not None else (None, None)
        else:
            pieces = _splice_section(previous.data, start, end, changes.gaps)
            after = None
            if pieces is not None and known is not None:
                after = conda_members.lengths_after(start, end, known, pieces)
        if pieces is None or changes.length not in (None, _joined_length(pieces)):
            return None
        spliced.append(pieces)
        lengths.append(after)
    return spliced, (lengths if None not in lengths else None)


def _splice_section(data: Any, start: int, end: int, gaps: list[Gap]) -> list[Piece] | None:
    """`splice_sections` for the section whose members lie in `data[start:end]`.

    Between two neighbouring gaps the old file's members are kept as they are: those of rows
    served and unchanged since, which the old file lists in the order the render gives. A
    gap's old members are found by its neighbours' exact bytes; the gap's new members go
    between them."""
    pieces: list[Piece] = []
    cursor = start  # where the next kept run begins: a member's first byte, or the end
    for gap in gaps:
        if gap.before is None:
            if cursor != start:
                return None
            cut = start
        else:
            found = _find_member(data, gap.before, cursor, start, end)
            if found < 0:
                return None
            cut = found + len(gap.before)
        if gap.after is None:
            resume = end
        else:
            resume = _find_member(data, gap.after, cut, start, end)
            if resume < 0:
                return None
        if cut > cursor:
            pieces.append((cursor, cut))
        pieces.extend(gap.members)
        cursor = resume
    if end > cursor:
        pieces.append((cursor, end))
    return pieces


def _find_member(data: Any, member: bytes, lo: int, start: int, end: int) -> int:
    """Where the whole member `member` begins in `data[lo:end]` (-1: nowhere), the section's
    members lying in `data[start:end]`: the first occurrence that begins and ends where a
    member may (after the section's start or a comma, before a comma or the section's end)."""
    found = data.find(member, lo, end)
    while found >= 0:
        after = found + len(member)
        if (found == start or data[found - 1] == COMMA) and (after == end or data[after] == COMMA):
            return found
        found = data.find(member, found + 1, end)
    return -1


COMMA = ord(",")


def _spliced_names(
    source: IndexSource, path: str, subdir: str, previous: Previous, dropped: list[Members]
) -> set[str] | None:
    """The package names of the subdir once `spliced` (see `splice_sections`): those the
    channeldata.json published with the old file lists for it, with those of the changed rows
    served now; a name of a changed row not served now, or of a member the splice drops from
    the old file, stays only if a file of the subdir is still served under it (asked). None
    where that channeldata.json is not the one published (then the names are asked whole).
    `dropped`: the members the splice drops (`_dropped_members`).

    Every member of the old file that the splice does not drop is a row unchanged since, with
    the name it had: only the names of dropped members and changed rows can go. (A row gone
    without a trace, which nothing told, is dropped with its gap, or stays until a splice
    that checks fails the length check: `splice_changes`.)"""
    data = _published_with(source, path, CHANNELDATA)
    if data is None:
        return None
    try:
        packages = orjson.loads(data)["packages"]
        before = {name for name, entry in packages.items() if subdir in entry["subdirs"]}
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    gone = {record["name"] for members in dropped for record in members.values()}
    touched: dict[str, bool] = {}
    for changes in previous.changes:
        for name, served in changes.names.items():
            touched[name] = touched.get(name, False) or served
    served = {name for name, now in touched.items() if now}
    maybe_gone = (gone | touched.keys()) - served
    doubtful = maybe_gone & before
    still = source.served_names(subdir, doubtful, SUFFIXES) if doubtful else set()
    return (before - maybe_gone) | served | still


#: A section's members: file name -> record.
Members = dict[str, dict[str, Any]]


def _dropped_members(previous: Previous, spliced: list[list[Piece]]) -> list[Members] | None:
    """Each section's members of the old file that `spliced` leaves out (the bytes its runs do
    not keep); None if one cannot be read, or has no name."""
    dropped = []
    for (start, end), pieces in zip(previous.sections, spliced, strict=True):
        kept = [piece for piece in pieces if isinstance(piece, tuple)]
        bounds = [start, *(at for piece in kept for at in piece), end]
        runs = [
            bytes(previous.data[lo:hi]).strip(b",")
            for lo, hi in zip(bounds[::2], bounds[1::2], strict=True)
        ]
        members = _members_of([run for run in runs if run])
        if members is None or not all(
            isinstance(record, dict) and isinstance(record.get("name"), str)
            for record in members.values()
        ):
            return None
        dropped.append(members)
    return dropped


def _members_of(members: list[bytes]) -> Members | None:
    """The `"filename":record` members, read; None if they cannot be."""
    try:
        read = orjson.loads(b"{" + b",".join(members) + b"}")
    except orjson.JSONDecodeError:
        return None
    return read if isinstance(read, dict) else None


def _operations(
    dropped: list[Members], spliced: list[list[Piece]], old_tail: bytes, tail: bytes
) -> bytes | None:
    """The JSON Patch (RFC 6902) from the old file to the spliced one, as a JSON array: each
    member dropped and not added back removed, each added one that is new or changed added
    (which replaces), and the top-level keys after the sections that changed (`removed`, the
    kept keys); None if one cannot be read."""
    operations: list[dict[str, Any]] = []
    for (section, _), old, pieces in zip(SECTIONS, dropped, spliced, strict=True):
        new = _members_of([piece for piece in pieces if isinstance(piece, bytes)])
        if new is None:
            return None
        operations += [
            {"op": "remove", "path": jlap.pointer(section, filename)}
            for filename in sorted(old.keys() - new.keys())
        ]
        operations += [
            {"op": "add", "path": jlap.pointer(section, filename), "value": record}
            for filename, record in new.items()
            if old.get(filename) != record
        ]
    if old_tail != tail:
        before, after = _members_of([old_tail[1:-1]]), _members_of([tail[1:-1]])
        if before is None or after is None:
            return None
        operations += [
            {"op": "remove", "path": jlap.pointer(key)}
            for key in sorted(before.keys() - after.keys())
        ]
        operations += [
            {"op": "add", "path": jlap.pointer(key), "value": value}
            for key, value in after.items()
            if before.get(key, _ABSENT) != value
        ]
    return orjson.dumps(operations)


_ABSENT = object()


def _joined_length(pieces: list[Piece]) -> int:
    size = sum(p[1] - p[0] if isinstance(p, tuple) else len(p) for p in pieces)
    return size + len(pieces) - 1 if pieces else 0


#: Bytes of the old file copied at a time.
SPLICE_BLOCK = 4 << 20


def _spliced_blocks(data: Any, pieces: list[Piece]) -> Iterator[bytes]:
    """The members of `pieces` (see `splice_sections`), comma separated, in blocks."""
    for number, piece in enumerate(pieces):
        if number:
            yield b","
        if isinstance(piece, bytes):
            yield piece
            continue
        for at in range(piece[0], piece[1], SPLICE_BLOCK):
            yield data[at : min(at + SPLICE_BLOCK, piece[1])]


def _members(
    source: IndexSource,
    subdir: str,
    suffix: str,
    names: dict[str, set[str]],
    written: conda_members.MemberList,
) -> Iterator[bytes]:
    """A section's `"filename":record` members, comma separated, in filename order; the
    package names it lists are added to `names`, the members to `written`. A source that hands
    them over ready-made (publishing's, straight from PostgreSQL) is asked for them, and for
    the names."""
    ready = (
        source.json_members(subdir, suffix, lines=written.add_lines)
        if hasattr(source, "json_members")
        else None
    )
    if ready is not None:
        yield from ready
        return
    first = True
    for filename, document in source.documents(subdir, suffix):
        raw = document if isinstance(document, bytes) else document.encode()
        member = orjson.dumps(filename) + b":" + raw
        written.add(member)
        yield member if first else b"," + member
        first = False
        names.setdefault(_package_name(filename), set()).add(subdir)


# --- Withdrawing files from a published channel -----------------------------------------------


def withdraw_channel(index: PublishedIndex, files: Mapping[str, set[str]], emit: Emit) -> set[str]:
    """Rewrite the published repodata of the subdirs (`files`: subdir -> package filenames)
    that list any of the files, without them, and channeldata.json where a package name is
    left with no file in a subdir; return the paths replaced.

    A subdir's document is loaded whole (orjson): a conda-forge linux-64 is ~250 MB, acceptable
    for this rare operation, and the only way to rewrite it without a streaming JSON editor.
    """
    replaced: set[str] = set()
    gone: dict[str, set[str]] = {}  # package name -> subdirs where none of its files is left
    for subdir, filenames in sorted(files.items()):
        path = f"{subdir}/repodata.json"
        published = index.open(path)
        if published is None:
            continue
        with published:
            old = published.read()
        document = _load(old, path)
        withdrawn, remaining, operations = set(), set(), []
        for section, _ in SECTIONS:
            packages = document.get(section)
            if not isinstance(packages, dict):
                continue
            for filename in sorted(filenames & packages.keys()):
                del packages[filename]
                withdrawn.add(filename)
                operations.append({"op": "remove", "path": jlap.pointer(section, filename)})
            remaining.update(_package_name(filename) for filename in packages)
        if not withdrawn:
            continue
        data = _dump(document)
        log = _withdrawn_log(index, subdir, old, data, operations)
        replaced.update(_write_repodata_files(subdir, data, emit, log))
        for name in {_package_name(filename) for filename in withdrawn} - remaining:
            gone.setdefault(name, set()).add(subdir)
    if gone:
        replaced.update(_withdraw_names(index, gone, emit))
    return replaced


def _withdrawn_log(
    index: PublishedIndex, subdir: str, old: bytes, new: bytes, operations: list[Any]
) -> bytes:
    """The subdir's log with the patch of a withdrawal from the document `old` to `new`
    added (a new log if the published one does not end at `old`)."""
    published = index.open(_log_path(subdir))
    log = None
    if published is not None:
        with published:
            log = published.read()
    before, after = (jlap.document_hash(data).hexdigest() for data in (old, new))
    return jlap.appended(log, before, after, orjson.dumps(operations), jlap.log_limit(len(new)))


def _withdraw_names(index: PublishedIndex, gone: Mapping[str, set[str]], emit: Emit) -> set[str]:
    """channeldata.json without the subdirs where a package has no file left (and without a
    package left in none); nothing if it is not published or lists none of them."""
    published = index.open(CHANNELDATA)
    if published is None:
        return set()
    with published:
        channeldata = _load(published.read(), CHANNELDATA)
    packages = channeldata.get("packages")
    changed = False
    for name, subdirs in gone.items():
        entry = packages.get(name) if isinstance(packages, dict) else None
        listed = entry.get("subdirs") if isinstance(entry, dict) else None
        if not isinstance(listed, list) or not subdirs.intersection(listed):
            continue
        entry["subdirs"] = [subdir for subdir in listed if subdir not in subdirs]
        if not entry["subdirs"]:
            del packages[name]
        changed = True
    if not changed:
        return set()
    _write_channeldata(channeldata, emit)
    return {CHANNELDATA}


def _package_name(filename: str) -> str:
    """A package's name from its file name, as `render_channel` lists it in channeldata."""
    return filename.rsplit("-", 2)[0]


def _load(data: bytes, path: str) -> dict[str, Any]:
    """A published JSON document; the standard library reads what orjson refuses (integers
    beyond 64 bits, which upstream records may hold and PSM serves back verbatim)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise FormatError(path, f"published document is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FormatError(path, "published document is not a JSON object")
    return document


def _dump(document: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:  # an integer orjson cannot write: see `_load`
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()

"""A conda subdir re-read from its repodata.jlap: only what changed, as conda and rattler read it.

Channels such as conda-forge publish beside each repodata.json a log of the JSON Patches
(RFC 6902) between its versions, each version named by the BLAKE2b-256 of its bytes (the
CEP "JSON Patch Incremental Updates for repodata.json"). The log's lines: a hex IV; one patch
per line, `{"from": h0, "to": h1, "patch": [operations]}`; a footer naming the latest document,
`{"url": "repodata.json", "latest": h}`; a checksum. Each line's running checksum is
BLAKE2b-256 of the line keyed by the one before (the IV for the first), and the last line is
the footer's. The log only grows at its end (footer and checksum rewritten), so a reader that
kept where the footer began (`pos`) and the checksum before it (`iv`) asks for the bytes from
there on (an HTTP Range) and checks them against what it kept.

A mirror whose stored rows are those of the document `have` asks the log for the patches from
`have` to the latest: the entries they add, replace or remove are all it reads and writes,
instead of a whole document of hundreds of MB. Anything this does not take makes the caller
read the whole document, as before: no log, a log whose checksum does not verify, no chain of
patches from `have`, an operation other than add, remove or replace, a change outside the
entries of `packages` and `packages.conda` (`info`, `removed`: the document-level values), a
change inside an entry that is not stored. The entries themselves are checked as a whole
document's are (`conda_records.entry_record`).

PSM writes such a log for the subdirs it serves too (`appended`, `started`): conda clients
that read logs, and a mirror of a PSM channel, then take what changed, not the document.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson

from psm.http import UpstreamError

from .base import Client
from .conda_records import SECTIONS

NAME = "repodata.jlap"

logger = logging.getLogger(__name__)
#: How long a subdir whose upstream has no log is read whole without asking for one.
ABSENT_FOR_SECONDS = 7 * 24 * 3600
#: How long a subdir is read from its log before it is read whole again: a log that stopped
#: following its document (a CDN serving it stale, an indexer that no longer writes it) must
#: not hold the mirror back for longer.
WHOLE_EVERY_SECONDS = 7 * 24 * 3600
#: The most of a log read at once (held in memory while it is checked): conda-forge's largest
#: subdir's is tens of MB. A larger one is not read; the document is.
MAX_LOG_BYTES = 256 * 1024 * 1024
#: The package sections a patch may change, by their JSON Pointer token.
PACKAGE_SECTIONS = frozenset(section for section, _ in SECTIONS)
_HASH = re.compile(rb"[0-9a-f]{64}")
_OPERATIONS = frozenset({"add", "remove", "replace"})

#: A section and a file name: an entry of a subdir's document.
Key = tuple[str, str]


class LogError(ValueError):
    """The log cannot be used: malformed, or its checksum does not verify."""


def document_hash(data: bytes = b"") -> Any:
    """The hash a log names a repodata.json by (fed its bytes as they are written)."""
    return hashlib.blake2b(data, digest_size=32)


@dataclass(frozen=True, slots=True)
class Log:
    """What a read of the log found: its patches (those after `pos` for a ranged read), the
    latest document's hash, and where to read from next time (`pos`, `iv`)."""

    patches: list[dict[str, Any]]
    latest: str
    pos: int
    iv: str


def read_log(body: bytes, pos: int = 0, iv: bytes = b"") -> Log:
    """The log `body`, read from byte `pos` (0: the whole log, its IV line first) whose running
    checksum there was `iv`. Raises LogError."""
    lines = _lines(body)
    offset = pos
    if pos == 0:
        if not lines:
            raise LogError("the log is empty")
        first = lines.pop(0)
        try:
            iv = bytes.fromhex(first.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise LogError("the log does not start with a hex IV") from None
        offset = len(first) + 1
    if not 0 < len(iv) <= 64:  # a BLAKE2b key
        raise LogError("the log's IV is not 1 to 64 bytes")
    if len(lines) < 2:
        raise LogError("the log lacks its footer and checksum")
    running = iv
    for line in lines[:-2]:
        running = hashlib.blake2b(line, key=running, digest_size=32).digest()
        offset += len(line) + 1
    before_footer = running
    running = hashlib.blake2b(lines[-2], key=running, digest_size=32).digest()
    if lines[-1] != running.hex().encode():
        raise LogError("the log's checksum does not verify")
    footer = _json(lines[-2])
    latest = footer.get("latest", "").encode() if isinstance(footer.get("latest"), str) else b""
    if not _HASH.fullmatch(latest):
        raise LogError("the log's footer names no latest document")
    patches = [_patch(line) for line in lines[:-2]]
    return Log(patches, latest.decode(), offset, before_footer.hex())


def _lines(body: bytes) -> list[bytes]:
    """A log's lines, a newline after the last taken or not (conda-forge writes none)."""
    lines = body.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _json(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise LogError("a line of the log is not JSON") from None
    if not isinstance(value, dict):
        raise LogError("a line of the log is not a JSON object")
    return value


def _patch(line: bytes) -> dict[str, Any]:
    patch = _json(line)
    ends = (patch.get("from"), patch.get("to"))
    if not all(isinstance(end, str) and _HASH.fullmatch(end.encode()) for end in ends):
        raise LogError("a patch of the log does not name the documents it goes between")
    if not isinstance(patch.get("patch"), list):
        raise LogError("a patch of the log holds no operations")
    return patch


def chain(patches: list[dict[str, Any]], have: str, latest: str) -> list[list[Any]] | None:
    """The operations of the patches from the document `have` to `latest`, in order (none if
    `have` is the latest); None if the log holds no such chain."""
    steps: list[list[Any]] = []
    want = latest
    for patch in reversed(patches):
        if want == have:
            break
        if patch["to"] == want:
            steps.append(patch["patch"])
            want = patch["from"]
    if want != have:
        return None
    steps.reverse()
    return steps


def _fetch(client: Client, url: str, start: int) -> Any:
    """The log at `url` from byte `start` on (`Client.fetch_from`), within MAX_LOG_BYTES."""
    return client.fetch_from(url, start, max_bytes=min(MAX_LOG_BYTES, client.max_bytes))


def patches_since(
    client: Client, url: str, state: dict[str, Any]
) -> tuple[list[list[Any]] | None, dict[str, Any]]:
    """The operations from the document `state["have"]` to the latest that the log at `url`
    holds, and the state to keep; (None, state) if it cannot say. Read from where the last
    read stopped (a Range request), or whole if that part does not verify or does not reach
    back to `have` (a document read whole since)."""
    have, pos, iv = state["have"], state.get("pos"), state.get("iv")
    log = None
    if isinstance(pos, int) and pos > 0 and isinstance(iv, str):
        part = _fetch(client, url, pos)
        try:
            if part is not None:
                ranged = (pos, bytes.fromhex(iv)) if part.status == 206 else ()
                log = read_log(part.body, *ranged)
        except (LogError, ValueError):
            log = None
        if log is not None and chain(log.patches, have, log.latest) is None:
            log = None
    if log is None:
        part = _fetch(client, url, 0)
        if part is None:
            logger.info("%s: upstream has none; the document is read whole", _named(url))
            return None, absent_state()
        try:
            log = read_log(part.body)
        except LogError as exc:
            logger.warning("%s not used (%s); the document is read whole", _named(url), exc)
            return None, {key: value for key, value in state.items() if key not in ("pos", "iv")}
    steps = chain(log.patches, have, log.latest)
    if steps is None:
        logger.info(
            "%s does not reach back to the document the rows are; it is read whole", _named(url)
        )
    end = {"pos": log.pos, "iv": log.iv}
    return steps, {**state, "have": have if steps is None else log.latest, **end}


# --- Writing the log of a subdir PSM serves -------------------------------------------------

#: A log past this share of its document's size is trimmed from its oldest patch on: reading
#: it would cost about what the compressed document does.
LOG_SHARE = 20
#: ... but a log of up to this many bytes is always kept.
LOG_MIN_BYTES = 1024 * 1024


def started(latest: str) -> bytes:
    """A new log, with no patch yet, of the document whose hash is `latest`. Its IV is drawn
    from that hash: a reader that kept where an earlier log of another document ended cannot
    take the new one's bytes for it, and the same document always starts the same log."""
    return _checksummed(hashlib.blake2b(latest.encode(), digest_size=32).digest(), [], latest)


def appended(
    log: bytes | None, before: str | None, after: str, operations: bytes, max_bytes: int
) -> bytes:
    """`log` with the patch `operations` (a JSON array) from the document `before` to `after`
    added, its oldest patches trimmed to keep it within `max_bytes`. `before` None: the
    document the log ends at (it was published with it). A new log that starts at `after` if
    `log` is missing, does not verify or does not end at `before`; the same log if `after` is
    the document it ends at.

    Trimming keeps the checksums of the lines left: the new first line is the running
    checksum of the last line dropped (the IV the rest was written from)."""
    try:
        kept = read_log(log) if log else None
    except LogError:
        kept = None
    if kept is None or kept.latest != (before or kept.latest):
        return started(after)
    if kept.latest == after:
        return log
    first_line, *rest = _lines(log)
    line = b'{"from":"%s","to":"%s","patch":%s}' % (
        kept.latest.encode(),
        after.encode(),
        operations,
    )
    lines = [*rest[:-2], line]  # the patch lines kept, then the new one
    iv = bytes.fromhex(first_line.decode())
    size, first = sum(len(each) + 1 for each in lines), 0
    while size + _FRAME > max_bytes and first < len(lines):
        iv = hashlib.blake2b(lines[first], key=iv, digest_size=32).digest()
        size -= len(lines[first]) + 1
        first += 1
    return _checksummed(iv, lines[first:], after)


def log_limit(document_size: int) -> int:
    """The most bytes a log of a document of `document_size` bytes keeps."""
    return max(LOG_MIN_BYTES, document_size // LOG_SHARE)


def _footer(latest: str) -> bytes:
    return b'{"url":"repodata.json","latest":"%s"}' % latest.encode()


#: The bytes of a log besides its patch lines: the IV line, the footer and the checksum.
_FRAME = 2 * (64 + 1) + len(_footer("0" * 64))


def _checksummed(iv: bytes, patches: list[bytes], latest: str) -> bytes:
    """The log's bytes. No newline after the checksum: conda splits the log on newlines and
    would take an empty last line for the checksum (conda-forge's logs end without one)."""
    footer = _footer(latest)
    running = iv
    for line in (*patches, footer):
        running = hashlib.blake2b(line, key=running, digest_size=32).digest()
    return b"\n".join([iv.hex().encode(), *patches, footer, running.hex().encode()])


def pointer(*tokens: str) -> str:
    """The JSON Pointer of `tokens` (RFC 6901: `~` and `/` escaped)."""
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in tokens)


def _named(url: str) -> str:
    """`<subdir>/repodata.jlap` of a log's URL, for a log line (the rest may hold a token)."""
    return "/".join(url.split("?", 1)[0].rsplit("/", 2)[-2:])


def log_end(client: Client, url: str, state: dict[str, Any]) -> dict[str, Any]:
    """`state` with where the log at `url` ends now (read whole), or saying there is none."""
    try:
        part = _fetch(client, url, 0)
        if part is None:
            return absent_state()
        log = read_log(part.body)
    except (UpstreamError, LogError):
        return state  # asked again next time
    return {**state, "pos": log.pos, "iv": log.iv}


def absent(state: Mapping[str, Any]) -> bool:
    """Whether upstream lately had no log for the subdir (`state` the one kept for it)."""
    return _within(state.get("absent"), ABSENT_FOR_SECONDS)


def absent_state() -> dict[str, Any]:
    """The state kept for a subdir whose upstream has no log."""
    return {"absent": int(time.time())}


def usable(state: Mapping[str, Any]) -> bool:
    """Whether the next read may ask the log: the hash of the document the rows are is known,
    upstream had a log lately, and the document was read whole lately."""
    return (
        isinstance(state.get("have"), str)
        and not absent(state)
        and _within(state.get("whole_at"), WHOLE_EVERY_SECONDS)
    )


def read_whole(state: Mapping[str, Any], have: str | None = None) -> dict[str, Any]:
    """The state after the document was read whole (its hash `have`, if computed) or found
    unchanged since (a 304)."""
    kept = {**state, "whole_at": int(time.time())}
    return kept if have is None else {**kept, "have": have}


def _within(since: Any, seconds: int) -> bool:
    return isinstance(since, int | float) and 0 <= time.time() - since < seconds


def _pointer(path: Any) -> list[str] | None:
    """The tokens of a JSON Pointer (RFC 6901); None if it is not one."""
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def touched(steps: list[list[Any]]) -> tuple[set[Key], set[Key]] | None:
    """The entries the operations of `steps` replace whole and those they change inside; None
    if an operation is one this module does not take (see the module's docstring)."""
    whole: set[Key] = set()
    inside: set[Key] = set()
    for operations in steps:
        for operation in operations:
            if not isinstance(operation, dict) or operation.get("op") not in _OPERATIONS:
                return None
            tokens = _pointer(operation.get("path"))
            if tokens is None or len(tokens) < 2 or tokens[0] not in PACKAGE_SECTIONS:
                return None
            if operation["op"] != "remove" and "value" not in operation:
                return None
            key = (tokens[0], tokens[1])
            if len(tokens) == 2:
                whole.add(key)
            elif key not in whole:  # an entry added by an earlier operation is not stored
                inside.add(key)
    return whole, inside


def patched(
    steps: list[list[Any]], stored: Callable[[Iterable[Key]], Mapping[Key, dict[str, Any]]]
) -> dict[Key, dict[str, Any] | None] | None:
    """The entries `steps` change, as they are after them (None: removed); `stored` gives the
    stored entries of the keys asked for (those changed inside). None if the steps cannot be
    applied here: the caller reads the whole document."""
    found = touched(steps)
    if found is None:
        return None
    _whole, inside = found
    current: dict[Key, Any] = dict(stored(inside)) if inside else {}
    if len(current) != len(inside):
        return None  # a change inside an entry that is not stored
    for operations in steps:
        for operation in operations:
            tokens = _pointer(operation["path"])
            assert tokens is not None  # checked by `touched`
            key = (tokens[0], tokens[1])
            if len(tokens) == 2:
                if operation["op"] == "remove":
                    current[key] = None
                elif isinstance(operation["value"], dict):
                    current[key] = operation["value"]
                else:
                    return None  # not an entry: the document says what is refused, and why
                continue
            entry = current.get(key)
            if entry is None:
                return None  # inside an entry removed before
            inner = "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[2:])
            try:
                current[key] = jsonpatch.apply_patch(entry, [{**operation, "path": inner}])
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError):
                return None
    return current

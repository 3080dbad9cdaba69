"""The check of a whole conda repodata document, and its top-level keys PSM does not know.

msgspec's C parser reads the whole document once: that is the check (a truncated or malformed
document fails before any record is taken in). It keeps every top-level value, and then every
entry of a package section, as raw bytes (`msgspec.Raw`, views into the document, which is
mapped from its file rather than read into memory), so a record becomes Python objects only
when it is looked at, one at a time. A key given twice counts once, with its last value, as
for conda's own JSON reader.

The check also finds `removed` and the unknown top-level keys: those kept are served back
verbatim (`signatures`, a key a future conda adds), the others are left out and reported on the
run.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Mapping
from typing import Any, BinaryIO

import msgspec
import orjson

from .base import FormatError
from .conda_records import SECTIONS, is_text, safe_filename

#: Top-level keys PSM reads, or writes itself when it renders a subdir's repodata.
KNOWN_KEYS = frozenset(
    {"info", *(section for section, _ in SECTIONS), "removed", "repodata_version"}
)
#: Other top-level keys (`signatures`, a key a future conda adds) are served back verbatim, up
#: to this much compact JSON per subdir; what is past it, or nested deeper than
#: EXTRA_KEYS_DEPTH, is left out and reported on the run (a hostile upstream's huge key is
#: never parsed, nor held in the channel's row).
EXTRA_KEYS_BYTES = 1024 * 1024
EXTRA_KEYS_DEPTH = 32
#: Fields that, beside `name` and `version`, make an object a package record.
RECORD_FIELDS = frozenset({"build", "depends", "fn", "md5", "sha256", "subdir", "url"})
SECTION_LEFT_OUT = "package section not mirrored (its records are not checked or filtered)"

Raw = msgspec.Raw
_TOP = msgspec.json.Decoder(dict[str, Raw])
_EMPTY_OBJECT = re.compile(rb"\{\s*\}")


class Document:
    """A repodata document, checked whole as it is opened (FormatError if it is not JSON or
    not an object); `entries(section)` are its package entries as raw bytes."""

    def __init__(self, fileobj: BinaryIO, url: str) -> None:
        self.url = url
        buffer = mapped(fileobj)
        if not bytes(buffer[:4096]).lstrip().startswith(b"{"):
            raise FormatError(url, "repodata must be a JSON object")
        try:
            self.top: dict[str, Raw | bytes] = _TOP.decode(buffer)
        except msgspec.DecodeError as exc:
            raise FormatError(url, f"not valid JSON: {exc}") from None

    @classmethod
    def read_already(cls, top: dict[str, bytes], url: str) -> Document:
        """A document read already, as it downloaded (see `conda_stream`): its top-level
        values as bytes (a package section's: `{}`, its entries compared already)."""
        document = cls.__new__(cls)
        document.url, document.top = url, top
        return document

    def value(self, key: str, missing: Any = None) -> Any:
        """A (small) top-level value, parsed; `missing` if absent."""
        raw = self.top.get(key)
        return missing if raw is None else _parse(raw)

    def entries(self, section: str) -> dict[str, Raw]:
        """filename -> raw entry of a package section ({} if absent), in document order."""
        raw = self.top.get(section)
        if raw is None:
            return {}
        try:
            return _TOP.decode(raw)
        except msgspec.DecodeError:  # checked whole already: the wrong shape
            raise FormatError(
                f"{self.url} [{section}]", "must be an object of file name to record"
            ) from None

    def check(self) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The extras to keep (`removed`, and `top_level`: unknown keys as compact JSON) and
        the (key, reason) of keys left out; FormatError if a package section is not an
        object (before any of its records is taken in)."""
        for section, _ in SECTIONS:
            raw = self.top.get(section)
            if raw is not None and bytes(memoryview(raw)[:1]) != b"{":
                raise FormatError(
                    f"{self.url} [{section}]", "must be an object of file name to record"
                )
        extras: dict[str, Any] = {}
        if "removed" in self.top:
            removed = self.value("removed", missing=None)
            if not isinstance(removed, list) or not all(safe_filename(f) for f in removed):
                raise FormatError(f"{self.url} [removed]", "must be a list of package file names")
            extras["removed"] = removed
        unknown = {key: raw for key, raw in self.top.items() if key not in KNOWN_KEYS}
        kept, left_out = _extra_keys(unknown)
        if kept:
            extras["top_level"] = kept
        return extras, left_out


def check_document(fileobj: BinaryIO, url: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Read the whole document (that is the check); return the extras to keep, `removed` and
    `top_level` (unknown keys as compact JSON), and the (key, reason) of keys left out."""
    return Document(fileobj, url).check()


def holds_packages(key: str) -> bool:
    """Whether a top-level key is a package section PSM does not parse: `v3` (the experimental
    repodata v3, whose `conda`, `tar.bz2` and `whl` sections rattler already installs from,
    wheels by absolute URLs to PyPI), a later `v<N>`, or another `packages.*` (the earlier
    `packages.whl`).

    A mirror that gates packages cannot pass these on: their records would reach clients
    without PSM's checks, policy and filters, and could send them around PSM. Nor does PSM
    parse them (yet): the CEPs are drafts, section keys are not file names, and a record
    would have to keep its section through storage and rendering. So they are left out:
    clients that read v3 still find every package PSM allows in `packages` and
    `packages.conda`."""
    return key.startswith("packages.") or re.fullmatch(r"v[0-9]+", key) is not None


def mapped(fileobj: BinaryIO) -> Any:
    """The document's bytes without a copy: its file mapped (the page cache holds it), or
    the bytes of an in-memory file."""
    fileobj.seek(0)
    try:
        return mmap.mmap(fileobj.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError):  # no file (BytesIO), or an empty one
        return fileobj.read()


def _parse(raw: Raw) -> Any:
    """A raw value as Python objects (orjson; msgspec reads integers past 64 bits)."""
    try:
        return orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError:
        return msgspec.json.decode(raw)


def _extra_keys(unknown: Mapping[str, Raw]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Of the unknown top-level keys, those kept as compact JSON, in document order within
    EXTRA_KEYS_BYTES, and those left out, with why."""
    left_out: list[tuple[str, str]] = []
    kept: dict[str, str] = {}
    used = 0
    for key, raw in unknown.items():
        if not is_text(key, 255):
            left_out.append((repr(key)[:255], "top-level key without a plain-text name"))
            continue
        if holds_packages(key):
            if not (len(raw) < 64 and _EMPTY_OBJECT.fullmatch(bytes(raw))):
                left_out.append((key, SECTION_LEFT_OUT))  # `{}`: nothing is lost
            continue
        # Compact JSON is the raw value less its whitespace: one far past the budget is
        # refused unparsed (memory stays bounded whatever upstream sends).
        if len(raw) > 8 * EXTRA_KEYS_BYTES:
            left_out.append((key, _over_budget()))
            continue
        try:
            value = orjson.loads(memoryview(raw))
        except orjson.JSONDecodeError:  # an integer past 64 bits, nesting past orjson's limit
            left_out.append((key, "unknown top-level key PSM cannot represent"))
            continue
        if _depth(value) > EXTRA_KEYS_DEPTH:
            left_out.append((key, "unknown top-level key nested too deeply"))
            continue
        if _has_records(value):
            left_out.append((key, "unknown top-level key holding package records"))
            continue
        text = orjson.dumps(value).decode()
        if used + len(text) > EXTRA_KEYS_BYTES:
            left_out.append((key, _over_budget()))
            continue
        kept[key], used = text, used + len(text)
    return kept, left_out


def _over_budget() -> str:
    return f"unknown top-level keys past {EXTRA_KEYS_BYTES // 1024} KiB"


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar: 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in _children(item))
    return deepest


def _children(item: dict | list) -> Any:
    return item.values() if isinstance(item, dict) else item


def _has_records(value: Any) -> bool:
    """Whether a value holds something shaped like a package record, at any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if (
                isinstance(item.get("name"), str)
                and "version" in item
                and item.keys() & RECORD_FIELDS
            ):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False

"""The check of a whole conda repodata document, and its top-level keys PSM does not know.

The check reads the whole document once (a truncated or malformed one fails before any record
is taken in), holding no more than one record in memory, and finds `removed` and the unknown
top-level keys: those kept are served back verbatim (`signatures`, a key a future conda adds),
the others are left out and reported on the run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, BinaryIO

import ijson
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
#: never held in memory or in the channel's row).
EXTRA_KEYS_BYTES = 1024 * 1024
EXTRA_KEYS_DEPTH = 32
#: Fields that, beside `name` and `version`, make an object a package record.
RECORD_FIELDS = frozenset({"build", "depends", "fn", "md5", "sha256", "subdir", "url"})
SECTION_LEFT_OUT = "package section not mirrored (its records are not checked or filtered)"
#: ijson's read size for a repodata document.
PARSE_BUFFER = 1 << 20


class _Counted:
    """A JSON object counted, not kept: the check reads a whole repodata for its top-level keys
    holding no more than one record in memory."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.entries += 1


def check_document(fileobj: BinaryIO, url: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Read the whole document (that is the check); return the extras to keep, `removed` and
    `top_level` (unknown keys as compact JSON), and the (key, reason) of keys left out."""
    fileobj.seek(0)
    removed, unknown = None, {}
    try:
        # Read to the end even after `removed` is found: that is the check.
        items = ijson.kvitems(fileobj, "", map_type=_Counted, use_float=True, buf_size=PARSE_BUFFER)
        for key, value in items:
            if key == "removed":
                removed = value if removed is None else removed
            elif key not in KNOWN_KEYS:
                unknown.setdefault(key, value)  # the first of duplicates, as for the others
    except ijson.JSONError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None
    extras: dict[str, Any] = {}
    if removed is not None:
        if not isinstance(removed, list) or not all(safe_filename(f) for f in removed):
            raise FormatError(f"{url} [removed]", "must be a list of package file names")
        extras["removed"] = removed
    kept, left_out = _extra_keys(fileobj, unknown)
    if kept:
        extras["top_level"] = kept
    return extras, left_out


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


def _extra_keys(
    fileobj: BinaryIO, unknown: Mapping[str, Any]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Of the unknown top-level keys (values from the check: objects only counted), those kept
    as compact JSON, in document order within EXTRA_KEYS_BYTES, and those left out, with why."""
    left_out: list[tuple[str, str]] = []
    candidates: dict[str, Any] = {}
    for key, value in unknown.items():
        if not is_text(key, 255):
            left_out.append((repr(key)[:255], "top-level key without a plain-text name"))
        elif holds_packages(key):
            if not isinstance(value, _Counted) or value.entries:  # `{}`: nothing is lost
                left_out.append((key, SECTION_LEFT_OUT))
        else:
            candidates[key] = value
    # Objects and arrays are read again, these keys only, built within the budget (a rare
    # pass, in Python: conda-forge's repodata has no such key but an empty `v3`).
    for key, value in candidates.items():
        if isinstance(value, _Counted) and not value.entries:
            candidates[key] = {}
    structured = {k for k, v in candidates.items() if isinstance(v, _Counted | list)}
    values, problems = _read_values(fileobj, structured) if structured else ({}, {})
    kept: dict[str, str] = {}
    used = 0
    for key, value in candidates.items():
        if key in problems:
            left_out.append((key, problems[key]))
            continue
        value = values[key] if key in structured else value
        if _has_records(value):
            left_out.append((key, "unknown top-level key holding package records"))
            continue
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # e.g. an integer past 64 bits
            left_out.append((key, "unknown top-level key PSM cannot represent"))
            continue
        if used + len(text) > EXTRA_KEYS_BYTES:
            left_out.append((key, _over_budget()))
            continue
        kept[key], used = text, used + len(text)
    return kept, left_out


def _over_budget() -> str:
    return f"unknown top-level keys past {EXTRA_KEYS_BYTES // 1024} KiB"


def _read_values(fileobj: BinaryIO, keys: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of the top-level `keys`, built event by event while they stay within
    EXTRA_KEYS_BYTES together and EXTRA_KEYS_DEPTH levels deep; (values, key -> why not)."""
    fileobj.seek(0)
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    depth = used = size = 0
    key, builder = "", None
    for event, value in ijson.basic_parse(fileobj, use_float=True, buf_size=PARSE_BUFFER):
        if depth == 1 and event == "map_key":
            key, size = value, 0
            wanted = key in keys and key not in values and key not in problems
            builder = ijson.ObjectBuilder() if wanted else None
            continue
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if builder is None:
            continue
        size += len(value) + 3 if isinstance(value, str) else 8
        if used + size > EXTRA_KEYS_BYTES:
            problems[key], builder = _over_budget(), None
        elif depth > EXTRA_KEYS_DEPTH:
            problems[key], builder = "unknown top-level key nested too deeply", None
        else:
            builder.event(event, value)
            if depth == 1:  # the value is complete
                values[key], builder, used = builder.value, None, used + size
    return values, problems


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

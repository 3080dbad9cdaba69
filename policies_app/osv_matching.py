"""Whether a version is affected by an OSV advisory's `affected` entry (OSV evaluation rules).

Pure Python: the ecosystem's version order is given as a `compare` function.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cmp_to_key

from .osv import RANGE_TYPES

#: Orders two versions of one ecosystem: below 0, 0 or above 0; raises for one it cannot read.
Compare = Callable[[str, str], int]


def affects(affected_entry: dict, version: str, compare: Compare) -> bool:
    """Whether `version` is affected per one reduced `affected` entry (OSV evaluation rules).

    `compare(a, b)` orders two versions of the entry's ecosystem (<0, 0, >0). A version is
    affected if it equals a listed one, or lies in an ECOSYSTEM/SEMVER range: events sorted by
    version ("introduced": "0" first), introduced turns on, fixed (>=) and last_affected (>)
    turn off; "limit" events bound the range. A listed version or range that `compare` cannot
    read (it raises) is skipped; if `version` itself is unreadable the error propagates.
    """
    compare(version, version)  # raises for an unreadable version
    for listed in affected_entry.get("versions") or ():
        if listed == version or _safe_equal(compare, version, listed):
            return True
    for rng in affected_entry.get("ranges") or ():
        if rng.get("type") not in RANGE_TYPES:
            continue
        try:
            if _in_range(rng.get("events") or [], version, compare):
                return True
        except Exception:  # an event version `compare` cannot read
            continue
    return False


def _safe_equal(compare: Compare, a: str, b: str) -> bool:
    try:
        return compare(a, b) == 0
    except Exception:  # a listed version `compare` cannot read
        return False


def _in_range(events: list[dict], version: str, compare: Compare) -> bool:
    limits = [e["limit"] for e in events if "limit" in e]
    if limits and not any("*" in limit or compare(version, limit) < 0 for limit in limits):
        return False

    def key(event: dict) -> str:
        return next(iter(event.values()))

    def order(a: dict, b: dict) -> int:
        zero_a, zero_b = a.get("introduced") == "0", b.get("introduced") == "0"
        if zero_a or zero_b:
            return zero_b - zero_a
        return compare(key(a), key(b))

    vulnerable = False
    for event in sorted((e for e in events if "limit" not in e), key=cmp_to_key(order)):
        if "introduced" in event:
            if event["introduced"] == "0" or compare(version, event["introduced"]) >= 0:
                vulnerable = True
        elif "fixed" in event:
            if compare(version, event["fixed"]) >= 0:
                vulnerable = False
        elif "last_affected" in event and compare(version, event["last_affected"]) > 0:
            vulnerable = False
    return vulnerable

"""OSV advisories: parsing, and reading them from files and archives.

Pure Python (no Django), so the policy engine and tests use it directly. The format is the OSV
schema (https://ossf.github.io/osv-schema/); `Advisory` keeps what the Vulnerability model stores.
Vectors are scored by `cvss`; whether a version is affected is decided by `osv_matching`.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from . import cvss

STATUSES = ("reported", "active", "cleared", "mitigated", "disputed")
# Largest single document (a .json file or a zip member) read; larger ones are refused.
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
ID_MAX_LENGTH = 100  # Vulnerability.osv_id
VECTOR_MAX_LENGTH = 200  # Vulnerability.cvss_vector
RANGE_TYPES = ("ECOSYSTEM", "SEMVER")  # GIT ranges name commits, which PSM cannot match
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
# Severity types in order of preference.
CVSS_TYPES = ("CVSS_V3", "CVSS_V4", "CVSS_V2")


class OSVError(ValueError):
    """An advisory (or the file holding it) that cannot be read."""

    def __init__(self, source: str, reason: str) -> None:
        self.source, self.reason = source, reason
        super().__init__(f"{source}: {reason}")


@dataclass
class Advisory:
    """One advisory reduced to the Vulnerability model's fields."""

    osv_id: str
    aliases: list[str] = field(default_factory=list)
    summary: str = ""
    cvss_score: Decimal | None = None
    cvss_vector: str = ""
    status: str = "reported"
    affected: list[dict] = field(default_factory=list)
    published_at: datetime | None = None
    modified_at: datetime | None = None
    ecosystems: str = ""  # "|PyPI|CRAN|": see `Vulnerability.ecosystems`
    malicious: bool = False

    def __post_init__(self) -> None:
        found = sorted({entry["ecosystem"] for entry in self.affected})
        self.ecosystems = f"|{'|'.join(found)}|" if found else ""
        # A withdrawn report (status cleared: OpenSSF withdraws its false positives) blocks
        # nothing as malicious.
        self.malicious = self.status != "cleared" and any(
            i.startswith(MALICIOUS_PREFIX) for i in [self.osv_id, *self.aliases]
        )


#: The id prefix of OSV's malicious-package entries (OpenSSF malicious-packages).
MALICIOUS_PREFIX = "MAL-"


# --- Parsing --------------------------------------------------------------------------------


def parse_advisory(doc: Any, source: str) -> Advisory:
    """Check one OSV document and reduce it to an Advisory; raise OSVError if it is unusable."""
    if not isinstance(doc, dict):
        raise OSVError(source, f"an advisory is a JSON object, not {_kind(doc)}")
    osv_id = doc.get("id")
    if not isinstance(osv_id, str) or not osv_id.strip():
        raise OSVError(source, "missing 'id'")
    osv_id = osv_id.strip()
    where = f"{source} ({osv_id})" if osv_id not in source else source
    if len(osv_id) > ID_MAX_LENGTH:
        raise OSVError(where, f"'id' is longer than {ID_MAX_LENGTH} characters")
    try:
        database_specific = _optional(doc, "database_specific", dict) or {}
        score, vector = _severity(doc)
        explicit = database_specific.get("cvss_score")
        if explicit is not None:
            score = _numeric_score(explicit, "database_specific.cvss_score")
        return Advisory(
            osv_id=osv_id,
            aliases=_strings(doc, "aliases"),
            summary=_summary(doc),
            cvss_score=score,
            cvss_vector=vector[:VECTOR_MAX_LENGTH],
            status=_status(doc, database_specific),
            affected=_affected(doc),
            published_at=_timestamp(doc, "published"),
            modified_at=_timestamp(doc, "modified"),
        )
    except _Invalid as exc:
        raise OSVError(where, str(exc)) from None


class _Invalid(ValueError):
    """A field-level problem; parse_advisory adds the source."""


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "unknown")


def _optional(doc: dict, key: str, kind: type, where: str = "") -> Any:
    value = doc.get(key)
    if value is not None and not isinstance(value, kind):
        expected = _kind(kind())
        raise _Invalid(f"'{where}{key}' must be {expected}, not {_kind(value)}")
    return value


def _strings(doc: dict, key: str, where: str = "") -> list[str]:
    values = _optional(doc, key, list, where) or []
    if not all(isinstance(v, str) for v in values):
        raise _Invalid(f"'{where}{key}' must be a list of strings")
    return values


def _summary(doc: dict) -> str:
    summary = (_optional(doc, "summary", str) or "").strip()
    if summary:
        return summary
    # Many PyPI (PYSEC) advisories only have details: keep their first paragraph.
    details = (_optional(doc, "details", str) or "").strip()
    first = details.split("\n\n", 1)[0].strip()
    return first if len(first) <= 500 else first[:499] + "…"


def _status(doc: dict, database_specific: dict) -> str:
    status = database_specific.get("status")
    if isinstance(status, str) and status.strip().lower() in STATUSES:
        return status.strip().lower()
    if _optional(doc, "withdrawn", str):
        return "cleared"
    return "reported"


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _timestamp(doc: dict, key: str) -> datetime | None:
    value = _optional(doc, key, str)
    if not value:
        return None
    text = _FRACTION.sub(r"\1", value.strip())  # fromisoformat takes at most microseconds
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"'{key}' is not an RFC 3339 timestamp: {value!r}") from None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _affected(doc: dict) -> list[dict]:
    entries = []
    for i, item in enumerate(_optional(doc, "affected", list) or []):
        where = f"affected[{i}]."
        if not isinstance(item, dict):
            raise _Invalid(f"'affected[{i}]' must be an object, not {_kind(item)}")
        package = _optional(item, "package", dict, where)
        if package is None:
            continue  # schema 1.6+: GIT-only entries without a package; nothing to match
        ecosystem, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem, str) or not ecosystem.strip():
            raise _Invalid(f"'{where}package.ecosystem' is missing")
        if not isinstance(name, str) or not name.strip():
            raise _Invalid(f"'{where}package.name' is missing")
        ranges = []
        for j, rng in enumerate(_optional(item, "ranges", list, where) or []):
            rng_where = f"{where}ranges[{j}]"
            if not isinstance(rng, dict):
                raise _Invalid(f"'{rng_where}' must be an object, not {_kind(rng)}")
            kind = rng.get("type")
            if not isinstance(kind, str):
                raise _Invalid(f"'{rng_where}.type' is missing")
            if kind in RANGE_TYPES:
                ranges.append({"type": kind, "events": _events(rng, rng_where)})
        entries.append(
            {
                "ecosystem": ecosystem.strip(),
                "name": name.strip(),
                "ranges": ranges,
                "versions": _strings(item, "versions", where),
            }
        )
    return entries


def _events(rng: dict, where: str) -> list[dict]:
    events = []
    for k, event in enumerate(_optional(rng, "events", list, f"{where}.") or []):
        kinds = [key for key in EVENT_KINDS if key in event] if isinstance(event, dict) else []
        if len(kinds) != 1:
            raise _Invalid(
                f"'{where}.events[{k}]' must have exactly one of {', '.join(EVENT_KINDS)}"
            )
        value = event[kinds[0]]
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"'{where}.events[{k}].{kinds[0]}' must be a version string")
        events.append({kinds[0]: value.strip()})
    if events and not any("introduced" in e for e in events):
        raise _Invalid(f"'{where}.events' has no 'introduced' event")
    return events


# --- Severity -------------------------------------------------------------------------------


def _severity(doc: dict) -> tuple[Decimal | None, str]:
    """The preferred (score, vector): CVSS v3 over v4 over v2; the highest of one type.

    Package-level severities (`affected[].severity`) count like the top-level ones. A type
    whose vectors cannot be scored here (v4) gives way to the next one that can, but its
    vector is kept when no type has a score.
    """
    items = list(_optional(doc, "severity", list) or [])
    for i, item in enumerate(_optional(doc, "affected", list) or []):
        if isinstance(item, dict):
            items.extend(_optional(item, "severity", list, f"affected[{i}].") or [])
    found: dict[str, list[tuple[Decimal | None, str]]] = {kind: [] for kind in CVSS_TYPES}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _Invalid("a 'severity' entry must be an object with a 'type'")
        kind, score = item["type"], item.get("score")
        if kind not in found:
            continue  # e.g. "Ubuntu" priorities
        if isinstance(score, int | float) and not isinstance(score, bool):
            found[kind].append((_numeric_score(score, kind), ""))
        elif isinstance(score, str) and _is_number(score):
            found[kind].append((_numeric_score(score, kind), ""))
        elif isinstance(score, str):
            found[kind].append((_vector_score(kind, score.strip()), score.strip()))
        else:
            raise _Invalid(f"{kind} 'score' must be a vector string, not {_kind(score)}")
    first_vector = ""
    for kind in CVSS_TYPES:
        scored = [(s, v) for s, v in found[kind] if s is not None]
        if scored:
            return max(scored, key=lambda sv: sv[0])
        first_vector = first_vector or next((v for _, v in found[kind] if v), "")
    return None, first_vector


def _is_number(text: str) -> bool:
    return re.fullmatch(r"\s*\d+(\.\d+)?\s*", text) is not None


def _numeric_score(value: Any, what: str) -> Decimal:
    try:
        score = Decimal(str(value).strip()) if not isinstance(value, bool) else None
    except InvalidOperation:
        score = None
    if score is None or not score.is_finite() or not 0 <= score <= 10:
        raise _Invalid(f"{what} must be a number from 0 to 10, not {value!r}")
    return score.quantize(Decimal("0.1"), ROUND_HALF_UP)


def _vector_score(kind: str, vector: str) -> Decimal | None:
    try:
        if kind == "CVSS_V3":
            return cvss.cvss3_base_score(vector)
        if kind == "CVSS_V2":
            return cvss.cvss2_base_score(vector)
    except ValueError as exc:
        raise _Invalid(f"bad {kind} vector {vector!r}: {exc}") from None
    if not re.fullmatch(r"CVSS:4\.\d/(?:[A-Za-z]+:[A-Za-z]+/?)+", vector):
        raise _Invalid(f"bad {kind} vector {vector!r}: expected 'CVSS:4.0/AV:..'")
    return None  # CVSS v4 scores come from lookup tables; use a numeric score if given


# --- Reading files and archives -------------------------------------------------------------


def iter_advisories(path: Path) -> Iterator[Advisory | OSVError]:
    """Advisories from a .json file, a .zip of them, or a directory tree of both, in order.

    Streams: one document in memory at a time. A file may hold one advisory or a JSON list of
    them. Problems come out as OSVError items, so one bad document does not stop the rest.
    """
    path = Path(path)
    if path.is_dir():
        yield from _iter_directory(path)
    elif path.is_file():
        if path.suffix.lower() == ".zip":
            yield from _iter_zip(path)
        else:
            yield from _iter_file(path)
    else:
        yield OSVError(str(path), "no such file or directory")


def _iter_directory(root: Path) -> Iterator[Advisory | OSVError]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            suffix = Path(name).suffix.lower()
            if suffix == ".json":
                yield from _iter_file(Path(folder, name))
            elif suffix == ".zip":
                yield from _iter_zip(Path(folder, name))


def _iter_file(path: Path) -> Iterator[Advisory | OSVError]:
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            yield OSVError(source, f"larger than {MAX_DOCUMENT_BYTES} bytes ({size}); skipped")
            return
        data = path.read_bytes()
    except OSError as exc:
        yield OSVError(source, f"cannot be read: {exc.strerror or exc}")
        return
    yield from _iter_document(data, source)


def _iter_zip(path: Path) -> Iterator[Advisory | OSVError]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        yield OSVError(str(path), f"not a readable zip archive: {exc}")
        return
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.lower().endswith(".json"):
                continue
            source = f"{path}:{info.filename}"
            if info.file_size > MAX_DOCUMENT_BYTES:
                yield OSVError(source, f"larger than {MAX_DOCUMENT_BYTES} bytes; skipped")
                continue
            try:
                with archive.open(info) as member:
                    data = member.read(MAX_DOCUMENT_BYTES + 1)  # the header may lie
            except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
                yield OSVError(source, f"cannot be extracted: {exc}")
                continue
            if len(data) > MAX_DOCUMENT_BYTES:
                yield OSVError(source, f"larger than {MAX_DOCUMENT_BYTES} bytes; skipped")
                continue
            yield from _iter_document(data, source)


def _iter_document(data: bytes, source: str) -> Iterator[Advisory | OSVError]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield OSVError(source, f"not valid JSON: {exc}")
        return
    docs = enumerate(doc) if isinstance(doc, list) else [(None, doc)]
    for i, item in docs:
        try:
            yield parse_advisory(item, source if i is None else f"{source}[{i}]")
        except OSVError as exc:
            yield exc

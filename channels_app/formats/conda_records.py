"""conda repodata entries: one `packages` or `packages.conda` entry checked and made a record."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urljoin

import orjson
from rattler import Version
from rattler.exceptions import InvalidVersionError

from .base import PackageRecord, Rejected

#: repodata sections and the package file suffix each holds.
SECTIONS = (("packages", ".tar.bz2"), ("packages.conda", ".conda"))
#: Package file suffixes (`.tar.bz2`, `.conda`).
SUFFIXES = tuple(suffix for _, suffix in SECTIONS)

#: What a conda file name may contain: no separators, no spaces, no leading dot, no `%`.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!~=,-]{0,254}")
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")  # needs no quoting in a URL (`+` would, on S3)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_CONDA_NAME = re.compile(r"[a-z0-9_.-]+")
_PLAIN_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")  # a conda version, certainly


#: The bytes that begin an object under a key named like a package file, in compact JSON.
NESTED_ENTRY = tuple(f'{suffix}":{{'.encode() for suffix in SUFFIXES)
NESTS_AN_ENTRY = "record holds an object under a package file's name"


def safe_filename(filename: Any) -> bool:
    """Whether `filename` may be a conda package file name (and a path segment)."""
    return (
        isinstance(filename, str)
        and _SAFE_FILENAME.fullmatch(filename) is not None
        and ".." not in filename
    )


#: The latest `timestamp` served, in ms (year 5138): py-rattler refuses one past its dates.
MAX_TIMESTAMP = 10**14
#: Clients read a `timestamp` above this as milliseconds, else as seconds.
SECONDS_UP_TO = 253402300799
_U64 = 1 << 64
_BIGINT = 1 << 63  # `Package.size`'s limit


def _count(value: Any) -> bool:
    """A JSON unsigned 64-bit integer (not a boolean)."""
    return type(value) is int and 0 <= value < _U64


def _timestamp(value: Any) -> bool:
    """A `timestamp` clients read: none, or a date from 1970 to MAX_TIMESTAMP."""
    if value is None:
        return True
    if type(value) is not int:
        return False
    return 0 <= (value * 1000 if value <= SECONDS_UP_TO else value) < MAX_TIMESTAMP


def _text_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


#: The fields conda clients read into typed values, each with what they take: an entry with
#: another value is refused by py-rattler (and with it every file of the package name), so PSM
#: refuses it too (`client_refuses`). Absent is fine for all but `build` and `build_number`.
TYPED_FIELDS: tuple[tuple[str, Any], ...] = (
    ("constrains", _strings),
    ("track_features", lambda v: isinstance(v, str) or _strings(v)),
    ("features", _text_or_null),
    ("license", _text_or_null),
    ("license_family", _text_or_null),
    ("arch", _text_or_null),
    ("platform", _text_or_null),
    ("python_site_packages_path", _text_or_null),
    ("noarch", lambda v: v in (None, True, False, "", "python", "generic")),
    ("timestamp", _timestamp),
    ("legacy_bz2_size", lambda v: v is None or _count(v)),
    ("legacy_bz2_md5", lambda v: v is None or (isinstance(v, str) and _MD5.fullmatch(v))),
    ("purls", lambda v: v is None or (_strings(v) and all(p.startswith("pkg:") for p in v))),
    ("run_exports", lambda v: v is None or isinstance(v, dict)),
    ("extra_depends", lambda v: isinstance(v, dict) and all(map(_strings, v.values()))),
)


def client_refuses(record: dict[str, Any]) -> str | None:
    """Why a conda client cannot read the entry `record` as it is (None: it can): a field it
    needs missing, or one of another type than it takes, or a version it cannot parse."""
    if _CONDA_NAME.fullmatch(record["name"]) is None:
        # py-rattler finds a name's records by the file name's lowercase prefix: others are lost.
        return "name is not a conda package name (a-z, 0-9, `_`, `-`, `.`)"
    if not isinstance(record.get("build"), str):
        return "record lacks a build string"
    if not _count(record.get("build_number")):
        return "record lacks a valid build_number"
    version = record["version"]
    if _PLAIN_VERSION.fullmatch(version) is None:  # most are: no parse needed for those
        try:
            Version(version)
        except InvalidVersionError:
            return "version is not a conda version"
    for key, takes in TYPED_FIELDS:
        if key in record and not takes(record[key]):
            return f"malformed {key}"
    return None


def is_text(value: Any, max_length: int) -> bool:
    """Whether `value` is printable text of 1 to `max_length` characters."""
    return isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable()


def base_url(repodata_url: str, base: Any) -> str:
    """Where the subdir's package files live upstream (repodata v2 `base_url`, else beside it)."""
    here = repodata_url.rsplit("/", 1)[0] + "/"
    if isinstance(base, str) and base:
        return urljoin(here, base.rstrip("/") + "/")
    return here


def file_url(base: str, filename: str) -> str:
    """Where a package file lives upstream, given where the subdir's files do."""
    return base + (filename if _PLAIN.fullmatch(filename) else quote(filename))


def entry_record(
    section: str,
    suffix: str,
    filename: Any,
    record: Any,
    subdir: str,
    base: str,
    raw: bytes,
    digest: int,
) -> PackageRecord | Rejected:
    """Check one repodata entry and turn it into a PackageRecord (or say why not)."""
    # The checks are written out (no helper calls, no generators): this runs for each of
    # hundreds of thousands of entries.
    if not safe_filename(filename):
        return Rejected(str(filename)[:255], "unsafe file name")
    if not filename.endswith(suffix):
        return Rejected(filename, f"file name does not end in {suffix} (section {section})")
    if not isinstance(record, dict):
        return Rejected(filename, "record is not an object")
    get = record.get
    name, version = get("name"), get("version")
    if not (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name.isprintable()
        and isinstance(version, str)
        and 0 < len(version) <= 100
        and version.isprintable()
    ):
        return Rejected(filename, "record lacks a valid name or version")
    if not filename.startswith(name) or filename[len(name) : len(name) + 1] != "-":
        return Rejected(filename, "file name does not match the package name")
    if get("subdir", subdir) != subdir:
        return Rejected(filename, f"record is for subdir {get('subdir')!r}")
    sha256, md5, size = get("sha256"), get("md5"), get("size")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        return Rejected(filename, "malformed sha256")
    if md5 is not None and not (isinstance(md5, str) and _MD5.fullmatch(md5)):
        return Rejected(filename, "malformed md5")
    if not sha256 and not md5:
        return Rejected(filename, "no sha256 or md5 to verify the file with")
    # Stored in a BIGINT: a larger size would sink the whole subdir's batch, not just this one.
    if size is not None and (type(size) is not int or not 0 <= size < _BIGINT):
        return Rejected(filename, "malformed size")
    depends = get("depends", [])
    if not isinstance(depends, list):
        return Rejected(filename, "malformed depends")
    for depend in depends:
        if not isinstance(depend, str):
            return Rejected(filename, "malformed depends")
    # What conda clients refuse would break every file of the name for them: refused here.
    if (refused := client_refuses(record)) is not None:
        return Rejected(filename, refused)
    # An absolute per-record URL would send clients around PSM: keep it only as our source.
    url = record.pop("url", None)
    if url is not None:
        raw = orjson.dumps(record)
    # What reads as another entry inside this one: a splice finds the members around a change
    # by their bytes in the published file (`conda_render._find_member`), and would take it
    # for one. (Looked for only in a record holding an object: a `{` past its first byte.)
    if raw.find(b"{", 1) > 0 and (NESTED_ENTRY[0] in raw or NESTED_ENTRY[1] in raw):
        return Rejected(filename, NESTS_AN_ENTRY)
    absolute = isinstance(url, str) and url.startswith(("http://", "https://"))
    upstream = url if absolute and is_text(url, 2000) and " " not in url else ""
    return PackageRecord(
        name=name,
        version=version,
        filename=filename,
        unit=subdir,
        url=upstream or file_url(base, filename),
        sha256=sha256.lower() if sha256 else None,
        md5=md5.lower() if md5 else None,
        size=size,
        depends=tuple(depends),
        license=license if isinstance(license := get("license"), str) else None,
        extra=record,
        document=raw.decode(),
        entry_digest=digest,
    )

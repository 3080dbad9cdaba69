"""conda repodata entries: one `packages` or `packages.conda` entry checked and made a record."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urljoin

import orjson

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
    if size is not None and (type(size) is not int or size < 0):
        return Rejected(filename, "malformed size")
    depends = get("depends", [])
    if not isinstance(depends, list):
        return Rejected(filename, "malformed depends")
    for depend in depends:
        if not isinstance(depend, str):
            return Rejected(filename, "malformed depends")
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

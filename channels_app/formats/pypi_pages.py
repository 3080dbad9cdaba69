"""The pages of the simple repository API (PEP 503, 592, 629, 658, 691, 700, 714): project names,
the project list and project pages parsed (JSON or HTML) into checked file records, and rendered
back as PSM serves them (HTML and JSON, API version 1.1). Pure: bytes in, records and bytes out.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from html.parser import HTMLParser
from operator import itemgetter
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlparse, urlsplit, urlunparse

import ijson
import orjson
from packaging.utils import (
    InvalidName,
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .base import (
    FormatError,
    PackageRecord,
    Rejected,
    entry_digest,
)

# --- Names ------------------------------------------------------------------------------------


def project_name(name: Any) -> str | None:
    """The normalized name of a valid project name, else None."""
    if not isinstance(name, str):
        return None
    try:
        return canonicalize_name(name.strip(), validate=True)
    except InvalidName:
        return None


def file_path(project: str, filename: str) -> str:
    """Where a package file is served inside the channel (the inverse of `locate`)."""
    return f"files/{project}/{filename}"


#: What a package file name may contain: no separators, spaces or `%`, no leading dot.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]{0,254}")


def safe_filename(filename: Any) -> bool:
    return (
        isinstance(filename, str)
        and _SAFE_FILENAME.fullmatch(filename) is not None
        and ".." not in filename
    )


# --- Parsing ----------------------------------------------------------------------------------


def parse_project_serials(body: bytes, url: str) -> dict[str, int | None] | None:
    """Normalized project -> `_last-serial` of a JSON root page; None for an HTML root.

    Streamed (PyPI lists 600,000 projects: a whole parse holds them all as dicts at once)."""
    if not body.lstrip().startswith(b"{"):
        return None
    listed: dict[str, int | None] = {}
    try:
        if ("projects", "start_array", None) not in ijson.parse(io.BytesIO(body)):
            raise FormatError(url, "malformed JSON project list: no `projects` array")
        for project in ijson.items(io.BytesIO(body), "projects.item", use_float=True):
            name = project_name(project["name"])
            serial = project.get("_last-serial")
            if name is not None:
                listed[name] = serial if type(serial) is int else None
    except (ijson.JSONError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(url, f"malformed JSON project list: {exc}") from None
    return listed


def parse_project_list(body: bytes, url: str) -> list[str]:
    """Return the project names of an index root page, JSON (PEP 691) or HTML (PEP 503)."""
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        try:
            projects = json.loads(body)["projects"]
            return [str(project["name"]) for project in projects]
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(url, f"malformed JSON project list: {exc}") from None
    parser = _AnchorParser()
    try:
        parser.feed(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(url, f"page is not UTF-8: {exc}") from None
    return parser.names


def parse_page(body: bytes, url: str, project: str) -> list[dict[str, Any]]:
    """The file entries of a project page, PEP 691-shaped (`url` absolute or relative).

    JSON if the body is an object, HTML if it starts with markup; raises FormatError if the
    page is neither or cannot be read, is of an unsupported major API version, or names
    another project.
    """
    body = body.removeprefix(b"\xef\xbb\xbf").strip()
    if body[:1] == b"{":
        return _parse_json_page(body, url, project)
    if body[:1] != b"<":
        # Read as HTML it would list no files, and remove every file of the project.
        raise FormatError(url, "neither a JSON nor an HTML project page")
    return _parse_html_page(body, url)


def _parse_json_page(body: bytes, url: str, project: str) -> list[dict[str, Any]]:
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None
    if not isinstance(page, dict):
        raise FormatError(url, "a project page must be a JSON object")
    meta = page.get("meta")
    version = meta.get("api-version") if isinstance(meta, dict) else None
    _check_api_version(version, url)
    name = page.get("name")
    if name is not None and (not isinstance(name, str) or canonicalize_name(name) != project):
        raise FormatError(url, f"the page is for project {name!r}, not {project!r}")
    files = page.get("files")
    if not isinstance(files, list):
        raise FormatError(f"{url} [files]", "must be a list of file entries")
    return files


def _parse_html_page(body: bytes, url: str) -> list[dict[str, Any]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(url, f"page is not UTF-8: {exc}") from None
    parser = _PageParser()
    try:
        parser.feed(text)
        parser.close()
    except AssertionError as exc:  # HTMLParser's way of giving up on broken markup
        raise FormatError(url, f"malformed HTML: {exc}") from None
    _check_api_version(parser.version, url)
    base = _page_base(url, parser.base)
    entries = (_html_entry(attrs, base) for attrs in parser.anchors if attrs.get("href"))
    return [entry for entry in entries if entry is not None]


def _page_base(page_url: str, base: str | None) -> str:
    """What the page's links are relative to: its first `<base href>`, resolved against the
    page as HTML resolves it (pip joins links to a relative one as written, giving URLs it
    cannot fetch; PSM fetches what the page means), else the page."""
    if base is None:
        return page_url
    try:
        return urljoin(page_url, base)
    except ValueError:  # e.g. "https://[x/": each link is refused (`_html_entry`)
        return base


def _check_api_version(version: Any, url: str) -> None:
    """PEP 629: a page of another major version must not be read."""
    if version is None:
        return
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+)*", version.strip()):
        raise FormatError(url, f"malformed repository API version {version!r}")
    if version.strip().split(".")[0] != "1":
        raise FormatError(url, f"unsupported repository API version {version}")


def _html_entry(attrs: Mapping[str, str | None], base: str) -> dict[str, Any] | None:
    """A PEP 503 anchor as a PEP 691 file entry (`#<hash>=<hex>` fragment, `data-*`), read as
    pip reads it (`Link.from_element`); None for a link to a folder.

    The URL is pip's (`_link_url`); the entry is refused (no `url`) where it is not absolute,
    as pip could not fetch it. The file name is the last segment of its path unquoted once
    (`%2F` is a `/` in it, an unsafe name): `file_record` checks that pip reads the same."""
    href = attrs.get("href") or ""
    link = _link_url(base, href)
    if link is None:  # pip fails on the whole page; PSM refuses the link alone
        name = href.partition("#")[0].partition("?")[0].rpartition("/")[2]
        return {"filename": unquote(name), "url": None}
    url, _, fragment = link.partition("#")
    parts = urlsplit(url)
    if parts.path[-1:] in ("", "/") and not _url_filename(url).endswith(SUFFIXES):
        return None  # a folder ("../"), not a file (pip takes ".../pkg-1.0.tar.gz/" for one)
    entry: dict[str, Any] = {
        "filename": unquote(parts.path.rstrip("/").rpartition("/")[2]),
        "url": url if parts.scheme and parts.netloc else None,
        "hashes": _with_url_hash(_hash_pairs(fragment), link),
    }
    if attrs.get("data-requires-python"):
        entry["requires-python"] = attrs["data-requires-python"]
    if "data-yanked" in attrs:
        # Without a value the attribute is the empty string to HTML (pip reads it as absent).
        entry["yanked"] = attrs["data-yanked"] or True
    metadata = _renamed(attrs, "data-core-metadata", "data-dist-info-metadata")
    if metadata == "true":
        entry["core-metadata"] = True
    elif metadata is not None and "=" in metadata:
        # One `<hash name>=<hex>`, all after the first `=` the digest, as pip reads it.
        name, _, digest = metadata.partition("=")
        entry["core-metadata"] = {name: digest}
    return entry


def _renamed(entry: Mapping[str, Any], key: str, old_key: str) -> Any:
    """PEP 714: the value of `key`, else of its old name where `key` is missing or null."""
    value = entry.get(key)
    return entry.get(old_key) if value is None else value


def _hash_pairs(text: str) -> dict[str, str] | None:
    """The `<hash name>=<hex>` pairs of a URL fragment (`&`-separated); None if a name is
    given twice with different digests (which one counts is anyone's guess)."""
    hashes: dict[str, str] = {}
    for part in text.split("&"):
        name, sep, value = part.partition("=")
        if (
            sep
            and name in _HASH_LENGTHS
            and hashes.setdefault(name, value).lower() != value.lower()
        ):
            return None
    return hashes


#: The hashes pip reads in a link's URL and in `data-core-metadata` (`_SUPPORTED_HASHES`).
_PIP_HASHES = frozenset({"sha512", "sha384", "sha256", "sha224", "sha1", "md5"})
#: The hash pip reads in a file's URL (`LinkHash`): the first `<name>=<value>` of those names
#: after a `#` or `&`, wherever it is (in the query, too), the value up to the next `&`.
_PIP_URL_HASH = re.compile(rf"[#&]({'|'.join(sorted(_PIP_HASHES))})=([^&]*)")


def _with_url_hash(hashes: Any, link: str | None) -> Any:
    """`hashes` (a PEP 691 `hashes` value) with the hash pip reads in the file's URL `link`
    (`_link_url`) added; None if they give that hash different digests."""
    found = _PIP_URL_HASH.search(link) if link is not None else None
    if found is None or not isinstance(hashes, dict):
        return hashes
    name, digest = found.groups()
    given = hashes.get(name, digest)
    if not isinstance(given, str) or given.lower() != digest.lower():
        return None
    return {**hashes, name: digest}


def looks_like_project_list(head: bytes, content_type: str) -> bool:
    """Whether the start of a page (`head`, perhaps cut short) is a simple index's project
    list: PEP 691 JSON, or PEP 503 HTML (PEP 629's version tag, or a link named after the
    project it leads to)."""
    if content_type.split(";")[0].strip().lower().startswith("application/vnd.pypi.simple."):
        return True
    body = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if body[:1] == b"{":
        return b'"projects"' in body or b'"meta"' in body
    text = body.decode("utf-8", "replace")
    if "pypi:repository-version" in text:
        return True
    parser = _ProjectLinkParser()
    parser.feed(text)
    return parser.found


class _ProjectLinkParser(HTMLParser):
    """Finds a PEP 503 project link: `<a href=".../<name>/">name</a>`."""

    def __init__(self) -> None:
        super().__init__()
        self.found = False
        self._target: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href") if tag == "a" else None
        segments = [s for s in urlsplit(href or "").path.split("/") if s]
        self._target = project_name(unquote(segments[-1])) if segments else None

    def handle_endtag(self, tag: str) -> None:
        self._target = None

    def handle_data(self, data: str) -> None:
        if self._target is not None and project_name(data) == self._target:
            self.found = True


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self._in_anchor = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_anchor = tag == "a"

    def handle_endtag(self, tag: str) -> None:
        self._in_anchor = False

    def handle_data(self, data: str) -> None:
        if self._in_anchor and re.fullmatch(r"\s*[A-Za-z0-9._-]+\s*", data):
            self.names.append(data.strip())


class _PageParser(HTMLParser):
    """Collects a project page's anchors, `<base href>` and PEP 629 version."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.base: str | None = None
        self.version: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))
        elif tag == "base" and self.base is None:
            # pip's: the first `<base>` whose first `href` has a value, even an empty one.
            self.base = next((value for name, value in attrs if name == "href"), None)
        elif tag == "meta" and (values := dict(attrs)).get("name") == "pypi:repository-version":
            self.version = values.get("content")


# --- Checking one file entry ------------------------------------------------------------------

#: Hash names a simple index may use (hashlib's guaranteed ones) and their hex digest lengths.
_HASH_LENGTHS = {
    name: hashlib.new(name).digest_size * 2
    for name in hashlib.algorithms_guaranteed
    if not name.startswith("shake_")
}
_HEX = re.compile(r"[0-9a-fA-F]+")
_MAX_URL = 4000
_MAX_REQUIRES_PYTHON = 1000
#: Package file suffixes PSM mirrors (wheels and PEP 625 sdists); eggs and installers are not.
SUFFIXES = (".whl", ".tar.gz", ".zip")
#: The names pip takes a file for a package by, whatever their case (`is_archive_file`).
_PIP_ARCHIVES = (".zip", ".whl", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar")
_PIP_ARCHIVES += (".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma")


def file_record(project: str, page_url: str, entry: Any) -> PackageRecord | Rejected:
    """Check one PEP 691 file entry of `project`'s page and turn it into a record."""
    if not isinstance(entry, dict):
        return Rejected("", "file entry is not an object")
    filename = entry.get("filename")
    if not safe_filename(filename):
        return Rejected(str(filename)[:255], "unsafe file name")
    parsed = _name_and_version(filename)
    if isinstance(parsed, str):
        return Rejected(filename, parsed)
    name, version = parsed
    if name != project:
        return Rejected(filename, f"file name is for project {name!r}")
    url = _upstream_url(page_url, entry.get("url"))
    if url is None:
        return Rejected(filename, "no http(s) URL")
    hashes = _hashes(_with_url_hash(entry.get("hashes", {}), _hashed_link(page_url, entry)))
    if hashes is None:
        return Rejected(filename, "malformed hashes")
    if "sha256" not in hashes and "md5" not in hashes:
        return Rejected(filename, "no sha256 hash")
    if _names_another_archive(url, filename):
        return Rejected(filename, "the URL is of another file")
    document: dict[str, Any] = {"filename": filename, "hashes": hashes}
    requires = entry.get("requires-python")
    if isinstance(requires, str) and len(requires) > _MAX_REQUIRES_PYTHON:
        return Rejected(filename, "requires-python too long")  # not served without it
    if isinstance(requires, str) and requires.strip():
        document["requires-python"] = requires
    yanked = entry.get("yanked")
    if yanked or isinstance(yanked, str):
        # Any true value, as pip reads it; a reason, or "" (not one to PEP 691: uv reads it
        # as yanked, pip as not; in doubt, yanked: only an exact pin installs it).
        document["yanked"] = yanked if isinstance(yanked, str) and yanked else True
    size = entry.get("size")
    if type(size) is int and size >= 0:
        document["size"] = size
    uploaded = entry.get("upload-time")
    if _is_timestamp(uploaded):
        document["upload-time"] = uploaded
    metadata = _renamed(entry, "core-metadata", "dist-info-metadata")
    if metadata is True:
        document["core-metadata"] = True
    elif isinstance(metadata, dict) and (metadata_hashes := _hashes(metadata)):
        document["core-metadata"] = metadata_hashes
    raw = orjson.dumps(document)
    return PackageRecord(
        name=project,
        version=version,
        filename=filename,
        unit=project,
        url=url,
        sha256=hashes.get("sha256"),
        md5=hashes.get("md5"),
        size=document.get("size"),
        extra=document,
        document=raw.decode(),
        entry_digest=entry_digest(raw, url),
    )


def _name_and_version(filename: str) -> tuple[str, str] | str:
    """(normalized name, normalized version) of a wheel or sdist file name, or why not.

    The usual names (no build tag, a version already in its normal form) are read by one
    regex; anything else by `packaging`, which gives the same answer for the usual ones."""
    plain = _plain_name_and_version(filename)
    if plain is not None:
        return canonicalize_name(plain[0]), plain[1]
    return _parsed_name_and_version(filename)


def _plain_name_and_version(filename: str) -> tuple[str, str] | None:
    """(name as written, version) of a usual wheel or sdist name (see `_name_and_version`),
    else None."""
    if filename.endswith(".whl"):
        wheel = _PLAIN_WHEEL.fullmatch(filename)
        if wheel is not None:
            return wheel[1], wheel[2]
    elif filename.endswith((".tar.gz", ".zip")):
        stem = filename[: -7 if filename.endswith(".tar.gz") else -4]
        name, _, version = stem.rpartition("-")
        if name and _NORMAL_VERSION.fullmatch(version):
            return name, version
    return None


def _parsed_name_and_version(filename: str) -> tuple[str, str] | str:
    """`_name_and_version` by `packaging`: every name it accepts, in full."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
        else:
            kind = filename.rsplit(".", 1)[-1] if "." in filename else "no extension"
            return f"unsupported file type ({kind})"
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return "not a valid wheel or sdist file name"
    return name, str(version)


#: A PEP 440 version in its normal form (`str(Version(v)) == v`) without epoch or local part.
_NORMAL_VERSION = re.compile(
    r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*(?:(?:a|b|rc)(?:0|[1-9][0-9]*))?"
    r"(?:\.post(?:0|[1-9][0-9]*))?(?:\.dev(?:0|[1-9][0-9]*))?"
)
#: A wheel name `packaging` accepts as it is (PEP 427 escaped name, a version in normal form,
#: no build tag, tags of identifiers): its name and version.
_PLAIN_WHEEL = re.compile(
    r"([A-Za-z0-9](?:[A-Za-z0-9.]|_(?!_))*)-(" + _NORMAL_VERSION.pattern + r")"
    r"-[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
    r"(?:-[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*){2}\.whl"
)

#: An absolute http(s) URL that joining, splitting, quoting as pip does and printing leave as
#: it is (no query, parameters, user, escapes or odd characters): what nearly every index
#: gives for a file.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]*)*")


def _upstream_url(page_url: str, url: Any) -> str | None:
    """The URL pip fetches a file entry's file from (`_link_url` without the fragment), if it
    is a safe http(s) URL."""
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        return None
    plain = url.partition("#")[0]
    if _PLAIN_URL.fullmatch(plain):
        return plain  # the same as below, without three URL parses
    if _PLAIN_PATH.fullmatch(plain) and (origin := _origin(page_url)) is not None:
        return origin + plain  # a path on the page's host, as many indexes give
    return _joined_url(page_url, url)


#: A URL path that joining and quoting keep as it is (no `.` or empty segments, no query).
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


@functools.lru_cache(maxsize=16)
def _origin(page_url: str) -> str | None:
    """`scheme://host[:port]` of a page URL as joining gives it; None if it gives no
    http(s) URL (then every URL of the page is joined in full)."""
    root = _joined_url(page_url, "/")
    return root[:-1] if root is not None and root.endswith("/") else None


def _joined_url(page_url: str, url: str) -> str | None:
    try:
        joined = urljoin(page_url, url)
        if _unsafe_url(joined.partition("#")[0]):  # before quoting would hide a space
            return None
        absolute = _pip_quoted(joined).partition("#")[0]
        parts = urlsplit(absolute)
    except ValueError:  # e.g. "https://[x/": an entry to reject, not a page to fail on
        return None
    return absolute if parts.scheme in ("http", "https") and parts.hostname else None


def _link_url(base: str, url: str) -> str | None:
    """The URL pip makes of a link on a page (`Link.url`): joined to `base` and quoted
    (`_pip_quoted`), fragment kept; None where pip would fail on it."""
    try:
        return _pip_quoted(urljoin(base, url))
    except ValueError:  # e.g. "https://[x/", or a lone surrogate quoting cannot encode
        return None


#: What pip keeps as it is between the parts of a path it quotes.
_PATH_KEPT = re.compile("(@|%2F)", re.IGNORECASE)


def _pip_quoted(url: str) -> str:
    """`url` with its path unquoted and quoted again part by part, as pip requests it
    (`_ensure_quoted_url`: `+` is sent as `%2B`, `%7e` as `~`, a space as `%20`). A URL
    without a host is left as it is: pip reads it as a local path, PSM refuses it."""
    parts = urlparse(url)
    if not parts.netloc:
        return url
    pieces = _PATH_KEPT.split(parts.path)
    path = "".join(p.upper() if i % 2 else quote(unquote(p)) for i, p in enumerate(pieces))
    return urlunparse(parts._replace(path=path))


def _hashed_link(page_url: str, entry: Mapping[str, Any]) -> str | None:
    """The entry's URL as pip reads hashes in it (`_link_url`), or None where it can hold
    none (pip looks after `#` and `&` only: not in PyPI's URLs)."""
    url = entry.get("url")
    if not isinstance(url, str) or ("#" not in url and "&" not in url):
        return None
    return _link_url(page_url, url)


def _names_another_archive(url: str, filename: str) -> bool:
    """Whether pip reads the URL as another package file than `filename`: pip ignores the
    `filename` of a JSON entry and reads the name (so project and version) from the URL. A
    URL that names no package file (".../download/1") pip skips, and uv goes by `filename`."""
    name = _url_filename(url)
    return name != filename and name.lower().endswith(_PIP_ARCHIVES)


#: A last path segment pip reads as it is.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def _url_filename(url: str) -> str:
    """The file name pip reads from a file's URL (`Link.filename`): the last segment of its
    path without trailing slashes, unquoted twice, else its host."""
    last = url.rpartition("/")[2]
    if _PLAIN_SEGMENT.fullmatch(last) and "?" not in url and "#" not in url:
        return last
    parts = urlsplit(url)
    name = posixpath.basename(unquote(parts.path).rstrip("/"))
    return unquote(name) if name else parts.netloc.rpartition("@")[2]


#: The ASCII characters that are spaces or not printable (`str.isspace`, `str.isprintable`).
_UNSAFE_ASCII = re.compile(r"[\x00-\x20\x7f]")


def _unsafe_url(url: str) -> bool:
    """Whether the URL holds a space or a character that does not print: by one regex for
    an ASCII URL (nearly all; a character test each costs a third of reading a page)."""
    if url.isascii():
        return _UNSAFE_ASCII.search(url) is not None
    return any(c.isspace() or not c.isprintable() for c in url)


def _hashes(value: Any) -> dict[str, str] | None:
    """Hashes of known names, lower-cased and sorted; None if one of them is malformed."""
    if not isinstance(value, dict):
        return None
    hashes = {}
    for name, digest in sorted(value.items()):
        length = _HASH_LENGTHS.get(name)
        if length is None:
            continue  # a hash we cannot check is not kept
        if not isinstance(digest, str) or len(digest) != length or not _HEX.fullmatch(digest):
            return None
        hashes[name] = digest.lower()
    return hashes


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# --- Rendering --------------------------------------------------------------------------------


def render_project(
    project: str, documents: Iterable[tuple[str, str | bytes]]
) -> tuple[bytes, bytes]:
    """The HTML (PEP 503) and JSON (PEP 691) pages of a project from its stored documents.

    JSON is API version 1.1 (PEP 700) when every file has a size, else 1.0 (1.1 requires it).
    """
    files = sorted(((name, orjson.loads(doc)) for name, doc in documents), key=itemgetter(0))
    entries, anchors, versions = [], [], set()
    sized = True
    for filename, document in files:
        quoted = filename if _UNQUOTED.fullmatch(filename) else quote(filename)
        url = f"../../files/{project}/{quoted}"  # file_path
        # {"filename", "url", the document's other keys}: the document's "filename" would
        # take the file name's place in the same position, so it is put back.
        entry = {"filename": filename, "url": url}
        entry.update(document)
        entry["filename"] = filename
        entries.append(entry)
        anchors.append(_anchor(filename, url, document))
        version = _version_of(filename)
        if version is not None:
            versions.add(version)
        if sized and "size" not in document:
            sized = False
    page = {
        "meta": {"api-version": "1.1" if sized else "1.0"},
        "name": project,
        "versions": _sorted_versions(versions),
        "files": entries,
    }
    title = html.escape(f"Links for {project}")
    body = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n"
        + "".join(anchors)
        + "  </body>\n</html>\n"
    )
    return body.encode(), orjson.dumps(page)


#: What `quote` leaves as it is.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")
#: A version of release numbers only, in normal form.
_RELEASE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def _version_of(filename: str) -> str | None:
    """The normalized version of a wheel or sdist file name, or None (`_name_and_version`
    without normalizing the name, which only its callers need)."""
    plain = _plain_name_and_version(filename)
    if plain is not None:
        return plain[1]
    parsed = _parsed_name_and_version(filename)
    return None if isinstance(parsed, str) else parsed[1]


def _sorted_versions(versions: Iterable[str]) -> list[str]:
    """Normalized versions in PEP 440 order: release numbers alone compare as their numbers
    without trailing zeros (as `Version` compares them), anything else by `Version`."""
    listed = list(versions)
    if all(_RELEASE.fullmatch(version) for version in listed):
        return sorted(listed, key=_release_key)
    return sorted(listed, key=Version)


def _release_key(version: str) -> tuple[int, ...]:
    numbers = [int(part) for part in version.split(".")]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def withdraw_project(
    project: str, page: bytes, filenames: set[str], where: str
) -> tuple[bytes, bytes] | None:
    """The HTML and JSON pages of `project` rendered again from its published JSON page
    (`where`), without the files named; None if the page lists none of them.

    Both pages come from the JSON one, so they agree; every other file keeps its entry (the
    entries are the stored documents plus the URL `render_project` derives).
    """
    try:
        files = orjson.loads(page).get("files")
    except (orjson.JSONDecodeError, AttributeError):
        files = None
    if not isinstance(files, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("filename"), str) for entry in files
    ):
        raise FormatError(where, "not a project page as PSM publishes them")
    kept = [entry for entry in files if entry["filename"] not in filenames]
    if len(kept) == len(files):
        return None
    return render_project(
        project, ((entry["filename"], orjson.dumps(_without(entry, "url"))) for entry in kept)
    )


def render_root(projects: Iterable[str]) -> tuple[bytes, bytes]:
    """The HTML and JSON project lists (`simple/`) of the given normalized names."""
    names = sorted(set(projects))
    links = "".join(f'    <a href="{quote(name)}/">{_escape(name)}</a>\n' for name in names)
    body = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n" + links + "  </body>\n</html>\n"
    )
    page = {"meta": {"api-version": "1.1"}, "projects": [{"name": name} for name in names]}
    return body.encode(), orjson.dumps(page)


#: What `html.escape` (quote=True) replaces; text without any is returned as it is.
_ESCAPED = re.compile("[&<>\"']")


def _escape(text: str) -> str:
    return html.escape(text, quote=True) if _ESCAPED.search(text) else text


def _without(document: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def _anchor(filename: str, url: str, document: Mapping[str, Any]) -> str:
    hashes = document.get("hashes") or {}
    chosen = _preferred_hash(hashes)
    href = f"{url}#{chosen}={hashes[chosen]}" if chosen else url
    parts = ['    <a href="', _escape(href), '"']
    requires = document.get("requires-python")
    if requires:
        parts += [' data-requires-python="', _escape_repeated(requires), '"']
    yanked = document.get("yanked")
    if yanked:
        parts += [' data-yanked="', _escape("" if yanked is True else str(yanked)), '"']
    metadata = document.get("core-metadata")
    if metadata is True:
        parts.append(' data-core-metadata="true"')
    elif isinstance(metadata, dict) and (name := _preferred_hash(metadata)):
        parts += [' data-core-metadata="', _escape(f"{name}={metadata[name]}"), '"']
    parts += [">", _escape(filename), "</a><br />\n"]
    return "".join(parts)


def _escape_repeated(text: str) -> str:
    """`_escape` of a value many files share (requires-python: `>=3.8` on most of PyPI's
    pages), remembered."""
    escaped = _ESCAPED_VALUES.get(text)
    if escaped is None:
        escaped = _escape(text)
        if len(_ESCAPED_VALUES) < 4096 and isinstance(text, str):
            _ESCAPED_VALUES[text] = escaped
    return escaped


_ESCAPED_VALUES: dict[str, str] = {}


def _preferred_hash(hashes: Mapping[str, str]) -> str | None:
    """The one hash an anchor gives (PEP 503 has room for one): sha256, else the first by
    name that pip reads, else the first. pip ignores any other name: a `#blake2b=` before a
    stored md5 left it installing the file (or trusting its metadata) unchecked."""
    if "sha256" in hashes:
        return "sha256"
    readable = [name for name in hashes if name in _PIP_HASHES]
    return min(readable or hashes, default=None)

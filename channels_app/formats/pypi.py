"""Python package indexes: the simple repository API (PEP 503, 592, 629, 658, 691, 700, 714).

A unit is one project (its normalized name). A project page, JSON (PEP 691) or HTML (PEP 503),
yields one record per file; its `document` is the PEP 691 file entry PSM serves back, without
`url`: PSM serves the file itself, at `files/<project>/<filename>` inside the channel.

Published layout, relative to the channel root::

    simple/index.html, simple/index.json                  the project list
    simple/<project>/index.html, simple/<project>/index.json  a project page
    files/<project>/<filename>                            a package file
    files/<project>/<filename>.metadata                   its core metadata (PEP 658)

Pages link to files relatively (`../../files/...`), so they must be served at
`simple/<project>/` (with the trailing slash) or at the index file's own path.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from html.parser import HTMLParser
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

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

from . import pypi_filters
from .base import (
    Client,
    Emit,
    Fetched,
    FormatError,
    IndexRequest,
    IndexSource,
    IsCurrent,
    PackageRecord,
    Rejected,
    RepositoryFormat,
    Unchanged,
    UnitExtras,
    entry_digest,
)

#: The largest project page accepted (PyPI's biggest are a few MB): a guard, not a limit.
MAX_PAGE_BYTES = 64 * 1024 * 1024
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
#: Content types of the published pages.
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = SIMPLE_JSON
#: Package file suffixes PSM mirrors (wheels and PEP 625 sdists); eggs and installers are not.
SUFFIXES = (".whl", ".tar.gz", ".zip")


class PypiFormat(RepositoryFormat):
    kind = "pypi"
    label = "standard python"
    source_help = (
        "A simple repository index, e.g. https://pypi.org/simple/; another PSM channel: "
        "https://<host>/api/repo/<channel>/simple/."
    )
    options_help = '{"projects": ["requests >=2.31"], "package_types": ["wheel"], "latest": 3}'

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The mirror filters (see `pypi_filters`), validated."""
        return pypi_filters.clean(options or {})

    def filter_files(
        self, options: Mapping[str, Any], files: Iterable[tuple[str, str, str, str, Mapping]]
    ) -> dict[str, str] | None:
        """Standard Python mirrors are filtered by their mirror filters, not by policies."""
        return pypi_filters.decide(
            options,
            (
                pypi_filters.PyFile(key, project, version, filename, document)
                for key, project, filename, version, document in files
            ),
        )

    def normalize_name(self, name: str) -> str:
        return canonicalize_name(name)

    def source_warnings(self, source_url: str, options: Mapping[str, Any]) -> list[str]:
        if (urlsplit(source_url).hostname or "").lower() == "pypi.org" and not options.get(
            "projects"
        ):
            return [
                "This mirrors the full PyPI repository (about 10 TB): set its frequency to run "
                "once yearly; re-running a complete PyPI mirror is costly."
            ]
        return []

    def index_units(self, client: Client, source_url: str, options: Mapping[str, Any]) -> list[str]:
        """The normalized project names: the mirror's `projects`, else the index root's."""
        return sorted(self.list_units(client, source_url, options))

    def list_units(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> dict[str, int | None]:
        """Projects with their `_last-serial` from a PEP 691 JSON root (PyPI's), else None."""
        if options.get("projects"):
            return dict.fromkeys(pypi_filters.project_names(options))
        url = source_url.rstrip("/") + "/"
        body = client.fetch(url, headers={"Accept": ACCEPT})
        if body is None:
            raise FormatError(url, "the index root was not found (404)")
        serials = parse_project_serials(body, url)
        if serials is None:
            names = (project_name(name) for name in parse_project_list(body, url))
            return dict.fromkeys(sorted({name for name in names if name is not None}))
        return serials

    def fetch_unit(
        self,
        client: Client,
        source_url: str,
        unit: str,
        dest: BinaryIO,
        validators: Mapping[str, str],
    ) -> Fetched:
        """GET `<source>/<project>/`, JSON preferred, conditionally on the stored validators."""
        if project_name(unit) != unit:
            raise FormatError(unit, "not a normalized project name")
        url = source_url.rstrip("/") + f"/{unit}/"
        headers = {"Accept": ACCEPT}
        if validators.get("url") == url:
            if validators.get("etag"):
                headers["If-None-Match"] = validators["etag"]
            if validators.get("last_modified"):
                headers["If-Modified-Since"] = validators["last_modified"]
        limit = min(client.max_bytes, MAX_PAGE_BYTES)
        download = client.download(url, dest, headers=headers, max_bytes=limit)
        if download.status == 304:
            return Fetched("unchanged", url, dict(validators))
        if download.status == 404:
            return Fetched("missing", url)
        if download.status != 200:
            raise FormatError(url, f"unexpected HTTP status {download.status}")
        dest.seek(0)
        kept = {"url": url, "etag": download.etag, "last_modified": download.last_modified}
        return Fetched("changed", url, {k: v for k, v in kept.items() if v})

    def parse_unit(
        self,
        fileobj: BinaryIO,
        url: str,
        unit: str,
        is_current: IsCurrent | None = None,
        current: Callable[[], Mapping[str, int]] | None = None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """Yield one record per file of a project page (JSON or HTML, sniffed).

        The whole page is read and checked before anything is yielded. Entries `is_current`
        accepts (same document, same upstream URL) come back as `Unchanged`.
        """
        fileobj.seek(0)
        entries = parse_page(fileobj.read(), url, unit)
        seen: set[str] = set()
        for entry in entries:
            item = file_record(unit, url, entry)
            if isinstance(item, PackageRecord):
                if item.filename in seen:
                    item = Rejected(item.filename, "file listed twice")
                elif is_current is not None and is_current(item.filename, item.digest):
                    item = Unchanged(item.filename)
                seen.add(item.filename)
            yield item

    # --- Publishing ---------------------------------------------------------------------------

    renders_units_alone = True

    def unit_paths(self, unit: str) -> list[str]:
        return [f"simple/{unit}/index.html", f"simple/{unit}/index.json"]

    def render_index(self, source: IndexSource, emit: Emit, units: set[str] | None = None) -> None:
        """Write the project pages (HTML and JSON) — all, or those of `units` — and the list."""
        if units is None:  # every page: the project list is what has pages
            listed: set[str] = set()
            grouped = source.grouped_documents()
        else:
            listed = {u for u in source.units() if project_name(u) == u}
            listed -= units  # those listed again below if they still have files
            grouped = source.grouped_documents(u for u in units if project_name(u) == u)
        for unit, documents in grouped:
            if project_name(unit) != unit:
                continue  # not a project page (a leftover of another format)
            listed.add(unit)
            page_html, page_json = render_project(unit, documents)
            with emit(f"simple/{unit}/index.html", HTML_TYPE) as out:
                out.write(page_html)
            with emit(f"simple/{unit}/index.json", JSON_TYPE) as out:
                out.write(page_json)
        root_html, root_json = render_root(sorted(listed))
        with emit("simple/index.html", HTML_TYPE) as out:
            out.write(root_html)
        with emit("simple/index.json", JSON_TYPE) as out:
            out.write(root_json)

    drops_unlisted_units = True
    sidecar_suffix = ".metadata"
    reserved_subchannel_names = frozenset({"simple", "files"})

    def index_request(self, path: str, accept: str | None) -> IndexRequest | None:
        """`simple/` and `simple/<project>/` by PEP 691 content negotiation; other spellings
        of a project (and a missing slash) are redirected to the normalized page."""
        parts = path.split("/")
        if parts[0] != "simple" or len(parts) > 3 or (len(parts) == 3 and parts[2]):
            return None
        if len(parts) == 2 and parts[1]:  # "simple/<name>" without its slash
            project = project_name(parts[1])
            return IndexRequest(redirect=f"simple/{project}/") if project else None
        if len(parts) == 3:
            project = project_name(parts[1])
            if project is None:
                return None
            if project != parts[1]:
                return IndexRequest(redirect=f"simple/{project}/")
        flavour = negotiate(accept)
        if flavour is None:
            return IndexRequest(content_types=(JSON_TYPE, HTML_TYPE))
        return IndexRequest(path=index_file(path, flavour) or "")

    def locate_sidecar(self, path: str) -> tuple[str, str, str] | None:
        located = locate_metadata(path)
        return (*located, ".metadata") if located else None

    def sidecar_digest(self, document: Mapping[str, Any]) -> str | None:
        metadata = document.get("core-metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("sha256"), str):
            return metadata["sha256"]
        return None

    def locate(self, path: str) -> tuple[str, str] | None:
        """(project, filename) of `files/<project>/<filename>`, or None."""
        located = _split_file_path(path)
        if located is None or not located[1].endswith(SUFFIXES):
            return None
        return located


# --- Names and paths --------------------------------------------------------------------------


def project_name(name: Any) -> str | None:
    """The normalized name of a valid project name, else None."""
    if not isinstance(name, str):
        return None
    try:
        return canonicalize_name(name.strip(), validate=True)
    except InvalidName:
        return None


def locate_metadata(path: str) -> tuple[str, str] | None:
    """(project, filename) of the package whose core metadata is at `path` (PEP 658), or None."""
    located = _split_file_path(path)
    if located is None or not located[1].endswith(".metadata"):
        return None
    project, filename = located[0], located[1].removesuffix(".metadata")
    return (project, filename) if filename.endswith(SUFFIXES) else None


def file_path(project: str, filename: str) -> str:
    """Where a package file is served inside the channel (the inverse of `locate`)."""
    return f"files/{project}/{filename}"


def index_file(path: str, flavour: str) -> str | None:
    """The published file answering a page request (`simple/`, `simple/<project>/`).

    The project name is normalized: a request for another spelling should be redirected.
    """
    extension = {"json": "json", "html": "html"}[flavour]
    parts = path.strip("/").split("/")
    if parts == ["simple"]:
        return f"simple/index.{extension}"
    if len(parts) == 2 and parts[0] == "simple":
        project = project_name(parts[1])
        return f"simple/{project}/index.{extension}" if project else None
    return None


def _split_file_path(path: str) -> tuple[str, str] | None:
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "files" or project_name(parts[1]) != parts[1]:
        return None
    return (parts[1], parts[2]) if _safe_filename(parts[2]) else None


#: What a package file name may contain: no separators, spaces or `%`, no leading dot.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]{0,254}")


def _safe_filename(filename: Any) -> bool:
    return (
        isinstance(filename, str)
        and _SAFE_FILENAME.fullmatch(filename) is not None
        and ".." not in filename
    )


# --- Content negotiation (PEP 691) ------------------------------------------------------------

#: What PSM serves, in the order ties between explicitly named types are broken.
_OFFERS = (
    ("application/vnd.pypi.simple.v1+json", "json"),
    ("application/vnd.pypi.simple.latest+json", "json"),
    ("application/vnd.pypi.simple.v1+html", "html"),
    ("application/vnd.pypi.simple.latest+html", "html"),
    ("text/html", "html"),
)


def negotiate(accept: str | None) -> str | None:
    """ "json" or "html" for an `Accept` header; None means nothing acceptable (406).

    The highest q-value wins, then the most specific match; between types the client names
    explicitly with equal q JSON wins, between wildcard matches HTML (what old clients parse).
    No header means HTML (PEP 503 clients).
    """
    if accept is None or not accept.strip():
        return "html"
    ranges = _media_ranges(accept)
    best: tuple[tuple[float, int, int], str] | None = None
    for index, (offer, flavour) in enumerate(_OFFERS):
        match: tuple[int, float] | None = None
        for media, q in ranges:
            specificity = _specificity(media, offer)
            if specificity is None:
                continue
            if match is None or (specificity, q) > match:
                match = (specificity, q)
        if match is None or match[1] <= 0:
            continue
        specificity, q = match
        rank = (q, specificity, -index if specificity == 2 else index)
        if best is None or rank > best[0]:
            best = (rank, flavour)
    return best[1] if best else None


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if "/" not in media:
            continue
        q: float | None = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = None
                if q is not None and not 0 <= q <= 1:  # also NaN
                    q = None
        if q is not None:
            ranges.append((media.lower(), q))
    return ranges


def _specificity(media: str, offer: str) -> int | None:
    if media == offer:
        return 2
    if media == "*/*":
        return 0
    kind, _, subtype = media.partition("/")
    if subtype == "*" and offer.startswith(kind + "/"):
        return 1
    return None


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
    base = urljoin(url, parser.base) if parser.base else url
    entries = (_html_entry(attrs, base) for attrs in parser.anchors if attrs.get("href"))
    return [entry for entry in entries if entry["filename"]]  # not links to folders


def _check_api_version(version: Any, url: str) -> None:
    """PEP 629: a page of another major version must not be read."""
    if version is None:
        return
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+)*", version.strip()):
        raise FormatError(url, f"malformed repository API version {version!r}")
    if version.strip().split(".")[0] != "1":
        raise FormatError(url, f"unsupported repository API version {version}")


def _html_entry(attrs: Mapping[str, str | None], base: str) -> dict[str, Any]:
    """A PEP 503 anchor as a PEP 691 file entry (`#<hash>=<hex>` fragment, `data-*`)."""
    href, fragment = urldefrag(urljoin(base, attrs.get("href") or ""))
    entry: dict[str, Any] = {
        "filename": unquote(urlsplit(href).path.rsplit("/", 1)[-1]),
        "url": href,
        "hashes": _hash_pairs(fragment),
    }
    if attrs.get("data-requires-python"):
        entry["requires-python"] = attrs["data-requires-python"]
    if "data-yanked" in attrs:
        entry["yanked"] = attrs["data-yanked"] or True
    metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
    if metadata == "true":
        entry["core-metadata"] = True
    elif metadata:
        entry["core-metadata"] = _hash_pairs(metadata)
    return entry


def _hash_pairs(text: str) -> dict[str, str]:
    """The `<hash name>=<hex>` pairs of a URL fragment or metadata attribute (`&`-separated)."""
    pairs = (part.partition("=") for part in text.split("&"))
    return {name: value for name, sep, value in pairs if sep and name in _HASH_LENGTHS}


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
        self.base = ""
        self.version: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a":
            self.anchors.append(values)
        elif tag == "base" and values.get("href") and not self.base:
            self.base = values["href"] or ""
        elif tag == "meta" and values.get("name") == "pypi:repository-version":
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


def file_record(project: str, page_url: str, entry: Any) -> PackageRecord | Rejected:
    """Check one PEP 691 file entry of `project`'s page and turn it into a record."""
    if not isinstance(entry, dict):
        return Rejected("", "file entry is not an object")
    filename = entry.get("filename")
    if not _safe_filename(filename):
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
    hashes = _hashes(entry.get("hashes", {}))
    if hashes is None:
        return Rejected(filename, "malformed hashes")
    if "sha256" not in hashes and "md5" not in hashes:
        return Rejected(filename, "no sha256 hash")
    document: dict[str, Any] = {"filename": filename, "hashes": hashes}
    requires = entry.get("requires-python")
    if isinstance(requires, str) and requires.strip() and len(requires) <= 1000:
        document["requires-python"] = requires
    yanked = entry.get("yanked")
    if yanked is True or (isinstance(yanked, str)):
        document["yanked"] = yanked or True
    size = entry.get("size")
    if type(size) is int and size >= 0:
        document["size"] = size
    uploaded = entry.get("upload-time")
    if _is_timestamp(uploaded):
        document["upload-time"] = uploaded
    metadata = entry.get("core-metadata", entry.get("dist-info-metadata"))
    if metadata is True:
        document["core-metadata"] = True
    elif isinstance(metadata, dict) and (metadata_hashes := _hashes(metadata)):
        document["core-metadata"] = metadata_hashes
    raw = orjson.dumps(document)
    return PackageRecord(
        name=project,
        version=version,
        filename=filename,
        subdir=project,
        url=url,
        sha256=hashes.get("sha256"),
        md5=hashes.get("md5"),
        size=document.get("size"),
        extra=document,
        document=raw.decode(),
        digest=entry_digest(raw, url),
    )


def _name_and_version(filename: str) -> tuple[str, str] | str:
    """(normalized name, normalized version) of a wheel or sdist file name, or why not."""
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


def _upstream_url(page_url: str, url: Any) -> str | None:
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        return None
    absolute = urldefrag(urljoin(page_url, url))[0]
    if any(c.isspace() or not c.isprintable() for c in absolute):
        return None
    parts = urlsplit(absolute)
    return absolute if parts.scheme in ("http", "https") and parts.hostname else None


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
    files = sorted(((name, orjson.loads(doc)) for name, doc in documents), key=lambda item: item[0])
    entries, anchors, versions = [], [], set()
    for filename, document in files:
        url = f"../../{file_path(project, quote(filename))}"
        entries.append({"filename": filename, "url": url, **_without(document, "filename")})
        anchors.append(_anchor(filename, url, document))
        parsed = _name_and_version(filename)
        if not isinstance(parsed, str):
            versions.add(parsed[1])
    sized = all("size" in document for _, document in files)
    page = {
        "meta": {"api-version": "1.1" if sized else "1.0"},
        "name": project,
        "versions": sorted(versions, key=Version),
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


def render_root(projects: Iterable[str]) -> tuple[bytes, bytes]:
    """The HTML and JSON project lists (`simple/`) of the given normalized names."""
    names = sorted(set(projects))
    links = "".join(f'    <a href="{quote(name)}/">{html.escape(name)}</a>\n' for name in names)
    body = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n" + links + "  </body>\n</html>\n"
    )
    page = {"meta": {"api-version": "1.1"}, "projects": [{"name": name} for name in names]}
    return body.encode(), orjson.dumps(page)


def _without(document: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def _anchor(filename: str, url: str, document: Mapping[str, Any]) -> str:
    hashes = document.get("hashes") or {}
    chosen = _preferred_hash(hashes)
    href = f"{url}#{chosen}={hashes[chosen]}" if chosen else url
    attrs = [("href", href)]
    if document.get("requires-python"):
        attrs.append(("data-requires-python", document["requires-python"]))
    yanked = document.get("yanked")
    if yanked:
        attrs.append(("data-yanked", "" if yanked is True else str(yanked)))
    metadata = document.get("core-metadata")
    if metadata is True:
        attrs.append(("data-core-metadata", "true"))
    elif isinstance(metadata, dict) and (name := _preferred_hash(metadata)):
        attrs.append(("data-core-metadata", f"{name}={metadata[name]}"))
    rendered = " ".join(f'{key}="{html.escape(value, quote=True)}"' for key, value in attrs)
    return f"    <a {rendered}>{html.escape(filename)}</a><br />\n"


def _preferred_hash(hashes: Mapping[str, str]) -> str | None:
    if "sha256" in hashes:
        return "sha256"
    return min(hashes) if hashes else None

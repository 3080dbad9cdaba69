"""Python package indexes: the simple repository API (PEP 503, 592, 629, 658, 691, 700, 714).

A unit is one project (its normalized name). A project page, JSON (PEP 691) or HTML (PEP 503),
yields one record per file; its `document` is the PEP 691 file entry PSM serves back, without
`url`: PSM serves the file itself, at `files/<project>/<filename>` inside the channel. This
module is the format (units, URLs, negotiation); `pypi_pages` parses and renders the pages and
`pypi_filters` holds the mirror filters.

Published layout, relative to the channel root::

    simple/index.html, simple/index.json                  the project list
    simple/<project>/index.html, simple/<project>/index.json  a project page
    files/<project>/<filename>                            a package file
    files/<project>/<filename>.metadata                   its core metadata (PEP 658)

Pages link to files relatively (`../../files/...`), so they must be served at
`simple/<project>/` (with the trailing slash) or at the index file's own path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from . import pypi_filters
from .base import (
    Client,
    Documents,
    Emit,
    Fetched,
    FormatCapabilities,
    FormatError,
    IndexRequest,
    IndexSource,
    PackageRecord,
    PublishedIndex,
    Rejected,
    RepositoryFormat,
    StoredEntries,
    Unchanged,
    UnitExtras,
    fetch_document,
)
from .pypi_pages import (
    SUFFIXES,
    file_record,
    looks_like_project_list,
    parse_page,
    parse_project_list,
    parse_project_serials,
    project_name,
    render_project,
    render_root,
    safe_filename,
    withdraw_project,
)

#: The largest project page accepted (PyPI's biggest are a few MB): a guard, not a limit.
MAX_PAGE_BYTES = 64 * 1024 * 1024
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
#: A fetched project page up to this size stays in memory while it is read.
PAGE_IN_MEMORY = 4 * 1024 * 1024
#: Content types of the published pages.
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = SIMPLE_JSON


class PypiFormat(RepositoryFormat):
    kind = "pypi"
    label = "standard python"
    capabilities = FormatCapabilities(
        drops_unlisted_units=True,
        reserved_subchannel_names=frozenset({"simple", "files"}),
        renders_units_alone=True,
        sidecar_suffix=".metadata",
        filters_files=True,
    )
    options_help = '{"projects": ["requests >=2.31"], "package_types": ["wheel"], "latest": 3}'

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The mirror filters (see `pypi_filters`), validated."""
        return pypi_filters.clean(options or {})

    def filter_files(
        self, options: Mapping[str, Any], files: Iterable[tuple[str, str, str, str, Mapping]]
    ) -> dict[str, str] | None:
        """The mirror filters (`pypi_filters`)."""
        return pypi_filters.decide(
            options,
            (
                pypi_filters.PyFile(key, project, version, filename, document)
                for key, project, filename, version, document in files
            ),
        )

    def source_warnings(self, source_url: str, options: Mapping[str, Any]) -> list[str]:
        if (urlsplit(source_url).hostname or "").lower() == "pypi.org" and not options.get(
            "projects"
        ):
            return [
                "This mirrors the full PyPI repository (about 10 TB): set its frequency to run "
                "once yearly; re-running a complete PyPI mirror is costly."
            ]
        return []

    def probe_source(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> list[str]:
        """A simple index answers its root URL with a project list (PEP 691 or PEP 503)."""
        peek = client.peek(source_url.rstrip("/") + "/", headers={"Accept": ACCEPT})
        hint = "the URL of one usually ends in /simple/, e.g. https://pypi.org/simple/"
        if peek.status != 200:
            return [f"The source has no Python simple index (HTTP {peek.status}): {hint}."]
        if not looks_like_project_list(peek.head, peek.content_type):
            return [
                "The source does not look like a Python simple index: its page is no PEP 691 "
                f"or PEP 503 project list ({hint})."
            ]
        return []

    def list_units(
        self,
        client: Client,
        source_url: str,
        options: Mapping[str, Any],
        documents: Documents | None = None,
    ) -> dict[str, int | None] | None:
        """The normalized project names: the mirror's `projects`, else the index root's, with
        their `_last-serial` from a PEP 691 JSON root (PyPI's), else None; None for all when
        the root is unchanged (a 304)."""
        if options.get("projects"):
            return dict.fromkeys(pypi_filters.project_names(options))
        url = source_url.rstrip("/") + "/"
        with tempfile.TemporaryFile() as root:
            fetched = fetch_document(
                documents,
                "project list",
                lambda kept: client.fetch_index(url, root, kept, headers={"Accept": ACCEPT}),
            )
            if fetched.status == "unchanged":
                return None
            if fetched.status == "missing":
                raise FormatError(
                    url,
                    "the index root was not found (404); a simple index URL usually ends in "
                    "/simple/",
                )
            body = root.read()
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
        limit = min(client.max_bytes, MAX_PAGE_BYTES)
        fetched = client.fetch_index(
            url, dest, validators, headers={"Accept": ACCEPT}, max_bytes=limit
        )
        return Fetched(fetched.status, url, fetched.validators)

    #: A project page is a few KB: a sync waits on the upstream's latency, not on bytes (the
    #: HTTP client keeps 16 connections).
    unit_fetchers = 12

    def unit_buffer(
        self, kept: str | None = None, begun: Callable[[], None] | None = None
    ) -> BinaryIO:
        """In memory up to `PAGE_IN_MEMORY` bytes (a project page is a few KB; a file per page
        cost more than parsing it), on disk beyond."""
        return tempfile.SpooledTemporaryFile(PAGE_IN_MEMORY, prefix="psm-index-")  # noqa: SIM115

    def parse_unit(
        self,
        fileobj: BinaryIO,
        url: str,
        unit: str,
        stored: StoredEntries | None = None,
    ) -> Iterator[PackageRecord | Rejected | Unchanged | UnitExtras]:
        """Yield one record per file of a project page (JSON or HTML, sniffed).

        The whole page is read and checked before anything is yielded. Entries
        `stored.is_current` accepts (same document, same upstream URL) come back as `Unchanged`.
        """
        fileobj.seek(0)
        entries = parse_page(fileobj.read(), url, unit)
        seen: set[str] = set()
        for entry in entries:
            item = file_record(unit, url, entry)
            if isinstance(item, PackageRecord):
                if item.filename in seen:
                    item = Rejected(item.filename, "file listed twice")
                elif stored is not None and stored.is_current(item.filename, item.entry_digest):
                    item = Unchanged(item.filename)
                seen.add(item.filename)
            yield item

    # --- Publishing ---------------------------------------------------------------------------

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

    def withdraw(
        self, index: PublishedIndex, files: Mapping[str, set[str]], emit: Emit
    ) -> set[str]:
        """Render the pages (HTML and JSON) of the projects that list the files again without
        them. The project list stays as it is: a project left with no files keeps an empty
        page (pip finds no version, as it would find no project)."""
        replaced: set[str] = set()
        for project, filenames in sorted(files.items()):
            html_path, json_path = self.unit_paths(project)
            published = index.open(json_path)
            if published is None:
                continue
            with published:
                pages = withdraw_project(project, published.read(), filenames, json_path)
            if pages is None:
                continue
            for path, content_type, page in zip(
                (html_path, json_path), (HTML_TYPE, JSON_TYPE), pages, strict=True
            ):
                with emit(path, content_type) as out:
                    out.write(page)
                replaced.add(path)
        return replaced

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

    def names_a_file(self, query: str) -> bool:
        """A wheel or sdist name."""
        return query.endswith(SUFFIXES) and safe_filename(query)


# --- Names and paths --------------------------------------------------------------------------


def locate_metadata(path: str) -> tuple[str, str] | None:
    """(project, filename) of the package whose core metadata is at `path` (PEP 658), or None."""
    located = _split_file_path(path)
    if located is None or not located[1].endswith(".metadata"):
        return None
    project, filename = located[0], located[1].removesuffix(".metadata")
    return (project, filename) if filename.endswith(SUFFIXES) else None


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
    return (parts[1], parts[2]) if safe_filename(parts[2]) else None


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

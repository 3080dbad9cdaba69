"""Python package indexes (the simple repository API, PEP 503 / PEP 691)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from .base import Client, FormatError, PackageRecord, RepositoryFormat

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


class PypiFormat(RepositoryFormat):
    kind = "pypi"
    label = "standard python"
    source_help = (
        "A simple repository index, e.g. https://pypi.org/simple/; another PSM channel: "
        "https://<host>/api/repo/<channel>/simple/."
    )

    def normalize_name(self, name: str) -> str:
        return canonicalize_name(name)

    def source_warnings(self, source_url: str, options: Mapping[str, Any]) -> list[str]:
        if (urlsplit(source_url).hostname or "").lower() == "pypi.org":
            return [
                "This mirrors the full PyPI repository (about 10 TB): set its frequency to run "
                "once yearly; re-running a complete PyPI mirror is costly."
            ]
        return []

    def iter_index(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> Iterator[PackageRecord]:
        """Yield one record per project of the index root (files arrive with the sync engine)."""
        url = source_url.rstrip("/") + "/"
        body = client.fetch(url, headers={"Accept": ACCEPT})
        if body is None:
            raise FormatError(url, "the index root was not found (404)")
        for name in parse_project_list(body, url):
            yield PackageRecord(name=canonicalize_name(name), version="", filename="")


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

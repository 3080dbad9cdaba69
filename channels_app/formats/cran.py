"""CRAN-like R repositories (`src/contrib/PACKAGES`, Debian control format)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from typing import Any

from .base import Client, FormatError, PackageRecord, RepositoryFormat


class CranFormat(RepositoryFormat):
    kind = "cran"
    label = "standard R"
    source_help = (
        "A CRAN-like repository, e.g. https://cloud.r-project.org; another PSM channel: "
        "https://<host>/api/repo/<channel>/cran."
    )

    def iter_index(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> Iterator[PackageRecord]:
        base = source_url.rstrip("/") + "/src/contrib/"
        body = client.fetch(base + "PACKAGES.gz")
        where = base + "PACKAGES.gz"
        if body is not None:
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise FormatError(where, f"not a valid gzip file: {exc}") from None
        else:
            where = base + "PACKAGES"
            body = client.fetch(where)
            if body is None:
                raise FormatError(where, "no PACKAGES index found (404)")
        for stanza in parse_dcf(body.decode("utf-8", errors="replace"), where):
            name, version = stanza.get("Package"), stanza.get("Version")
            if not name or not version:
                raise FormatError(where, "a stanza lacks Package or Version")
            yield PackageRecord(
                name=name,
                version=version,
                filename=f"{name}_{version}.tar.gz",
                subdir="src/contrib",
                md5=stanza.get("MD5sum"),
                license=stanza.get("License"),
                extra=stanza,
            )


def parse_dcf(text: str, where: str) -> Iterator[dict[str, str]]:
    """Yield the stanzas of a Debian-control-format file; continuation lines are joined."""
    stanza: dict[str, str] = {}
    key = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t":
            if key is None:
                raise FormatError(f"{where} line {number}", "continuation line without a field")
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            stanza[key] = value.strip()
        else:
            raise FormatError(f"{where} line {number}", "expected 'Field: value'")
    if stanza:
        yield stanza

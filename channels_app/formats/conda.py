"""conda channels: subdirs, repodata.json and package records."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from .base import Client, FormatError, OptionsError, PackageRecord, RepositoryFormat

#: Platforms a conda channel may have (conda's known subdirs).
KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "emscripten-wasm32",
        "freebsd-64",
        "linux-32",
        "linux-64",
        "linux-aarch64",
        "linux-armv6l",
        "linux-armv7l",
        "linux-ppc64",
        "linux-ppc64le",
        "linux-riscv64",
        "linux-s390x",
        "osx-64",
        "osx-arm64",
        "wasi-wasm32",
        "win-32",
        "win-64",
        "win-arm64",
        "zos-z",
    }
)
#: Used when the mirror names no subdirs and the source has no channeldata.json.
DEFAULT_SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")


class CondaFormat(RepositoryFormat):
    kind = "conda"
    label = "conda"
    source_help = (
        "A conda channel, e.g. https://conda.anaconda.org/conda-forge; another PSM channel: "
        "https://<host>/api/repo/<channel>; a token in the path is kept private."
    )

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        options = dict(options or {})
        subdirs = options.pop("subdirs", None)
        if options:
            raise OptionsError(f"unknown conda mirror options: {', '.join(sorted(options))}")
        if subdirs is None:
            return {}
        if not isinstance(subdirs, list) or not all(isinstance(s, str) for s in subdirs):
            raise OptionsError("subdirs must be a list of platform names")
        unknown = sorted(set(subdirs) - KNOWN_SUBDIRS)
        if unknown:
            raise OptionsError(f"unknown platform(s): {', '.join(unknown)}")
        # noarch is always mirrored: platform packages depend on it.
        return {"subdirs": sorted(set(subdirs) | {"noarch"})}

    def subdirs(self, client: Client, source_url: str, options: Mapping[str, Any]) -> list[str]:
        """The subdirs to mirror: the option, else what channeldata.json lists, else defaults."""
        if options.get("subdirs"):
            return list(options["subdirs"])
        body = client.fetch(_join(source_url, "channeldata.json"))
        listed: list[str] = []
        if body is not None:
            try:
                listed = [s for s in json.loads(body).get("subdirs", []) if s in KNOWN_SUBDIRS]
            except (ValueError, AttributeError, TypeError):
                listed = []  # a broken channeldata.json only costs us the hint
        return sorted(set(listed or DEFAULT_SUBDIRS) | {"noarch"})

    def iter_index(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> Iterator[PackageRecord]:
        for subdir in self.subdirs(client, source_url, options):
            url = _join(source_url, f"{subdir}/repodata.json")
            body = client.fetch(url)
            if body is None:
                continue  # a channel need not have every platform
            yield from parse_repodata(body, url, subdir)


def parse_repodata(body: bytes, url: str, subdir: str) -> Iterator[PackageRecord]:
    """Yield the records of one subdir's repodata.json."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise FormatError(url, f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FormatError(url, "repodata must be a JSON object")
    for key in ("packages", "packages.conda"):
        section = document.get(key) or {}
        if not isinstance(section, dict):
            raise FormatError(f"{url} [{key}]", "must be an object of file name to record")
        for filename, record in section.items():
            if not isinstance(record, dict):
                raise FormatError(f"{url} [{key}][{filename}]", "record must be an object")
            yield PackageRecord(
                name=str(record.get("name", "")),
                version=str(record.get("version", "")),
                filename=filename,
                subdir=subdir,
                sha256=record.get("sha256"),
                md5=record.get("md5"),
                size=record.get("size"),
                depends=tuple(record.get("depends", ())),
                license=record.get("license"),
                extra=record,
            )


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"

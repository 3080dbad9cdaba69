"""The contract every repository format implements, and the record it produces."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class Client(Protocol):
    """What a format needs from the HTTP layer (`psm.http.UpstreamClient`)."""

    def fetch(self, url: str, *, headers: dict[str, str] | None = None) -> bytes | None: ...


class FormatError(Exception):
    """Upstream metadata could not be understood; names where (URL, key or line) and why."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class OptionsError(ValueError):
    """A mirror's format options are invalid; the message is shown to the user."""


@dataclass(frozen=True, slots=True)
class PackageRecord:
    """One installable file as an upstream index describes it."""

    name: str
    version: str
    filename: str
    subdir: str = ""
    url: str = ""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    depends: tuple[str, ...] = ()
    license: str | None = None
    # Format-specific fields, kept verbatim so they can be served back unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict)


class RepositoryFormat:
    """One upstream repository format (conda, Python simple index, CRAN).

    A format module holds all knowledge of its format: URLs, parsing, names and options.
    It imports no models and no settings; the HTTP session is handed in.
    """

    kind: ClassVar[str]
    label: ClassVar[str]
    #: Shown under the source URL field of the mirror form.
    source_help: ClassVar[str] = ""

    def clean_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Return the validated options for a mirror of this format, or raise OptionsError."""
        if options:
            unknown = ", ".join(sorted(options))
            raise OptionsError(f"{self.label} mirrors take no options (got: {unknown})")
        return {}

    def source_warnings(self, source_url: str, options: Mapping[str, Any]) -> list[str]:
        """Return advice about mirroring this source (shown, never blocking)."""
        return []

    def normalize_name(self, name: str) -> str:
        return name

    def iter_index(
        self, client: Client, source_url: str, options: Mapping[str, Any]
    ) -> Iterator[PackageRecord]:
        """Fetch the source's index and yield its records."""
        raise NotImplementedError

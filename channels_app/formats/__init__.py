"""Registry of repository formats: a new type is one module and one line here."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from .base import (
    Fetched,
    FormatCapabilities,
    FormatError,
    OptionsError,
    PackageRecord,
    Rejected,
    RepositoryFormat,
    StoredEntries,
    Unchanged,
    UnitExtras,
    UnitList,
    content_type,
    entry_digest,
)


@functools.cache
def _registered() -> dict[str, RepositoryFormat]:
    """`FORMATS`, made at first use: a process that needs one format module alone (the child
    of `isolation`) does not import them all, nor what they import (the HTTP client, Celery)."""
    from .conda import CondaFormat
    from .cran import CranFormat
    from .pypi import PypiFormat

    return {fmt.kind: fmt for fmt in (CondaFormat(), PypiFormat(), CranFormat())}


def __getattr__(name: str) -> Any:
    if name == "FORMATS":  # kind -> format
        return _registered()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_format(kind: str) -> RepositoryFormat:
    """Return the format registered as `kind`; KeyError names the known kinds."""
    formats = _registered()
    try:
        return formats[kind]
    except KeyError:
        known = ", ".join(sorted(formats))
        raise KeyError(f"unknown package type {kind!r} (known: {known})") from None


def kind_label(kind: str) -> str:
    """The label of the package type `kind` ("standard python"), or `kind` if unknown."""
    fmt = _registered().get(kind)
    return fmt.label if fmt else kind


def kind_choices() -> list[tuple[str, str]]:
    return [(fmt.kind, fmt.label) for fmt in _registered().values()]


def kind_labels(formats: Iterable[RepositoryFormat] | None = None, joined: str = "or") -> str:
    """The labels of `formats` (default: every registered one) as a phrase for help texts:
    "conda, standard python or standard R"."""
    labels = [fmt.label for fmt in (_registered().values() if formats is None else formats)]
    if len(labels) < 2:
        return "".join(labels)
    return f"{', '.join(labels[:-1])} {joined} {labels[-1]}"


__all__ = [
    "FORMATS",
    "Fetched",
    "FormatCapabilities",
    "Rejected",
    "StoredEntries",
    "Unchanged",
    "UnitExtras",
    "UnitList",
    "content_type",
    "entry_digest",
    "FormatError",
    "OptionsError",
    "PackageRecord",
    "RepositoryFormat",
    "get_format",
    "kind_label",
    "kind_choices",
    "kind_labels",
]

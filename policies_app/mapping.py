"""The conda → PyPI name mapping, read from the files conda-forge's tooling publishes.

Accepted shapes, in JSON (`.json`, or any other name) or YAML (`.yaml`, `.yml`):

- regro/cf-graph-countyfair `mappings/pypi/name_mapping.yaml` (and `.json`): a list of
  `{conda_name, import_name, pypi_name, mapping_source}`;
- its `mappings/pypi/grayskull_pypi_mapping.json` (and `.yaml`): the same entries, keyed by
  PyPI name;
- prefix.dev parselmouth `files/compressed_mapping.json` (and `files/v0/<channel>/…`):
  `{conda_name: pypi_name}`, where the value is null when the package has no PyPI
  counterpart, or a list when it provides several.

An entry that cannot be read is reported by its position or key and the others still load.
PyPI names are kept in their normalized form (PEP 503), conda names in lower case: as the
advisories are matched. Pure Python, no Django.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from packaging.utils import canonicalize_name

ECOSYSTEM = "PyPI"
YAML_SUFFIXES = (".yaml", ".yml")
MAX_NAME = 255  # NameMapping's columns

_CONDA_NAME = re.compile(r"[a-z0-9_][a-z0-9_.+-]*")
_PYPI_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)


class MappingError(ValueError):
    """The file as a whole cannot be read: nothing of it may replace the stored mapping."""


@dataclass(frozen=True, slots=True)
class NameMap:
    """A conda package name and the name of the same software in another ecosystem."""

    conda_name: str
    ecosystem: str
    name: str


@dataclass
class ParsedMapping:
    """What a mapping file says: its entries, and the entries it could not read."""

    entries: set[NameMap] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    #: Conda names of unreadable entries: what is stored for them is kept as it was.
    failed: set[str] = field(default_factory=set)


def read_mapping(path: Path) -> ParsedMapping:
    """The mapping in the file at `path`; MappingError when the file cannot be read at all."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MappingError(f"{path}: cannot read the file ({exc.strerror or exc}).") from None
    return parse_mapping(data, name=str(path), yaml=Path(path).suffix.lower() in YAML_SUFFIXES)


def parse_mapping(data: bytes, *, name: str, yaml: bool = False) -> ParsedMapping:
    """Parse a mapping document (JSON, or YAML with `yaml`); `name` names it in errors."""
    document = _load_yaml(data, name) if yaml else _load_json(data, name)
    parsed = ParsedMapping()
    if isinstance(document, list):
        items = ((f"entry {i + 1}", None, item) for i, item in enumerate(document))
    elif isinstance(document, dict):
        items = ((f"entry {key!r}", key, value) for key, value in document.items())
    else:
        raise MappingError(
            f"{name}: not a mapping file: expected a list of entries (cf-graph-countyfair "
            "name_mapping) or an object of names (parselmouth compressed_mapping, grayskull "
            f"mapping), found {type(document).__name__}."
        )
    count = 0
    for where, key, value in items:
        count += 1
        try:
            parsed.entries.update(_entry(key, value))
        except ValueError as exc:
            parsed.errors.append(f"{name}, {where}: {exc}")
            conda_name = value.get("conda_name") if isinstance(value, dict) else key
            if isinstance(conda_name, str):
                parsed.failed.add(conda_name.strip().lower())
    if not count:
        raise MappingError(f"{name}: holds no entries; the stored mapping is left as it was.")
    if not parsed.entries and parsed.errors:
        raise MappingError(
            f"{name}: no entry could be read; the stored mapping is left as it was. "
            f"First problem: {parsed.errors[0]}"
        )
    return parsed


def _load_json(data: bytes, name: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"{name}: not valid JSON ({exc}).") from None


def _load_yaml(data: bytes, name: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise MappingError(f"{name}: reading YAML needs PyYAML; give the JSON file.") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
    try:
        return yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise MappingError(f"{name}: not valid YAML ({_one_line(exc)}).") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _entry(key: str | None, value: Any) -> Iterator[NameMap]:
    """The pairs one entry gives: `key` is None in a list, the object's key otherwise."""
    if isinstance(value, dict):  # {conda_name, pypi_name, ...}, listed or keyed by PyPI name
        conda_name = _conda_name(value.get("conda_name"))
        if key is None and "pypi_name" not in value:
            raise ValueError(f"pypi_name is missing (conda_name {conda_name!r})")
        pypi_names = value.get("pypi_name", key)
    elif key is None:
        raise ValueError(f"expected an object with conda_name and pypi_name, found {_shown(value)}")
    else:  # parselmouth: {conda_name: pypi_name | [pypi_name, ...] | null}
        conda_name, pypi_names = _conda_name(key), value
    if pypi_names is None:
        return  # no PyPI counterpart
    if isinstance(pypi_names, str):
        pypi_names = [pypi_names]
    if not isinstance(pypi_names, list):
        raise ValueError(
            f"the PyPI name must be a string, a list of strings or null, not {_shown(pypi_names)}"
        )
    for pypi_name in pypi_names:
        yield NameMap(conda_name, ECOSYSTEM, _pypi_name(pypi_name))


def _conda_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"conda_name must be a package name, not {_shown(value)}")
    name = value.strip().lower()
    if len(name) > MAX_NAME or not _CONDA_NAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a conda package name")
    return name


def _pypi_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the PyPI name must be a project name, not {_shown(value)}")
    name = value.strip()
    if len(name) > MAX_NAME or not _PYPI_NAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a PyPI project name")
    return canonicalize_name(name)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Mirror filters of standard Python mirrors: which files of which projects enter the channel.

Options (all optional, combined with AND; a list's values with OR):

- `projects`: requirement-style specs, `name [PEP 440 specifiers]` (`requests >=2.31`); only
  these projects are fetched at all, and only matching versions enter. Empty: every project.
- `exclude`: specs of project versions to drop (`urllib3 <2`, or a bare name for all).
- `package_types`: `wheel`, `sdist` (default both).
- `platforms`: wheel platform tags as shell patterns (`manylinux*_x86_64`, `win_amd64`);
  `any` wheels always pass. Sdists are not platform-bound and pass.
- `python_versions`: `X.Y` versions a wheel must support (by its tags: `cpXY`, `pyX`,
  `pyXY`, `abi3` from its minimum up); sdists and wheels without a Python tag pass.
- `prereleases`: false drops pre-release and development versions (default true).
- `latest`: keep only the N newest (PEP 440) versions of each project that pass the rest.
- `uploaded_after`, `uploaded_before`: ISO dates for the upstream `upload-time` (PEP 700);
  files without one pass.
- `yanked`: false drops yanked files (default true: they stay, flagged, as PyPI serves them).
- `max_size`: bytes; bigger files are dropped.

Each exclusion has a reason, counted on the run.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .base import OptionsError

KEYS = {
    "projects",
    "exclude",
    "package_types",
    "platforms",
    "python_versions",
    "prereleases",
    "latest",
    "uploaded_after",
    "uploaded_before",
    "yanked",
    "max_size",
}


@dataclass(frozen=True, slots=True)
class PyFile:
    """What the filters read of one file."""

    key: str  # unique in the mirror: "project/filename"
    project: str
    version: str
    filename: str
    document: Mapping[str, Any]


def clean(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated filter options (normalized); OptionsError says what is wrong."""
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise OptionsError(f"unknown Python mirror options: {', '.join(unknown)}")
    cleaned: dict[str, Any] = {}
    for key in ("projects", "exclude"):
        if options.get(key) is not None:
            specs = {
                f"{canonicalize_name(r.name)} {r.specifier}".strip()
                for r in _requirements(options[key], key)
            }
            if specs:
                cleaned[key] = sorted(specs)
    if "package_types" in options:
        types = options["package_types"]
        if not isinstance(types, list) or not set(types) <= {"wheel", "sdist"} or not types:
            raise OptionsError("package_types must be a list of 'wheel' and/or 'sdist'")
        cleaned["package_types"] = sorted(set(types))
    for key in ("platforms", "python_versions"):
        if key in options:
            values = options[key]
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise OptionsError(f"{key} must be a list of strings")
            cleaned[key] = values
    for version in cleaned.get("python_versions", ()):
        if not _python_version(version):
            raise OptionsError(f"python_versions: {version!r} is not X.Y (e.g. 3.12)")
    for key in ("prereleases", "yanked"):
        if key in options:
            if not isinstance(options[key], bool):
                raise OptionsError(f"{key} must be true or false")
            cleaned[key] = options[key]
    for key in ("latest", "max_size"):
        if key in options:
            value = options[key]
            if type(value) is not int or value < 1:
                raise OptionsError(f"{key} must be a positive whole number")
            cleaned[key] = value
    for key in ("uploaded_after", "uploaded_before"):
        if key in options:
            try:
                cleaned[key] = dt.date.fromisoformat(str(options[key])).isoformat()
            except ValueError:
                raise OptionsError(f"{key} must be a date, YYYY-MM-DD") from None
    return cleaned


def project_names(options: Mapping[str, Any]) -> list[str]:
    """The projects the filters name (empty: all)."""
    return sorted({canonicalize_name(r.name) for r in _requirements(options.get("projects", []))})


def decide(options: Mapping[str, Any], files: Iterable[PyFile]) -> dict[str, str]:
    """`key` -> why the file is excluded ("" when it enters)."""
    include = _by_name(options.get("projects", []))
    exclude = _by_name(options.get("exclude", []))
    types = set(options.get("package_types", ("wheel", "sdist")))
    platforms = options.get("platforms") or []
    pythons = [_python_version(v) for v in options.get("python_versions", [])]
    prereleases = options.get("prereleases", True)
    after, before = options.get("uploaded_after"), options.get("uploaded_before")
    yanked_ok = options.get("yanked", True)
    max_size = options.get("max_size")
    decisions: dict[str, str] = {}
    passing: dict[str, list[tuple[Version, PyFile]]] = defaultdict(list)
    for file in files:
        try:
            version = Version(file.version)
        except InvalidVersion:
            decisions[file.key] = "invalid version"
            continue
        kind = "wheel" if file.filename.endswith(".whl") else "sdist"
        reason = ""
        if include and not any(
            r.specifier.contains(version, prereleases=True) for r in include.get(file.project, ())
        ):
            reason = "not in the project list"
        elif any(
            r.specifier.contains(version, prereleases=True) for r in exclude.get(file.project, ())
        ):
            reason = "excluded by the block list"
        elif kind not in types:
            reason = f"package type {kind} not mirrored"
        elif not prereleases and (version.is_prerelease or version.is_devrelease):
            reason = "pre-release"
        elif not yanked_ok and file.document.get("yanked"):
            reason = "yanked"
        elif max_size and (file.document.get("size") or 0) > max_size:
            reason = f"larger than {max_size} bytes"
        elif (after or before) and not _uploaded_within(file.document, after, before):
            reason = "uploaded outside the date window"
        elif kind == "wheel" and (platforms or pythons):
            reason = _wheel_mismatch(file.filename, platforms, pythons)
        decisions[file.key] = reason
        if not reason:
            passing[file.project].append((version, file))
    latest = options.get("latest")
    if latest:
        for files_of_project in passing.values():
            kept = sorted({v for v, _ in files_of_project}, reverse=True)[:latest]
            for version, file in files_of_project:
                if version not in kept:
                    decisions[file.key] = f"not among the latest {latest} versions"
    return decisions


def _requirements(values: Any, key: str = "projects") -> list[Requirement]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise OptionsError(f"{key} must be a list of 'name [version specifiers]'")
    found = []
    for value in values:
        try:
            requirement = Requirement(value)
        except InvalidRequirement as exc:
            raise OptionsError(f"{key}: {value!r} is not 'name [specifiers]': {exc}") from None
        if requirement.url or requirement.marker or requirement.extras:
            raise OptionsError(f"{key}: {value!r} may only have a name and version specifiers")
        found.append(requirement)
    return found


def _by_name(values: list[str]) -> dict[str, list[Requirement]]:
    grouped: dict[str, list[Requirement]] = defaultdict(list)
    for requirement in _requirements(values):
        grouped[canonicalize_name(requirement.name)].append(requirement)
    return grouped


def _python_version(text: str) -> tuple[int, int] | None:
    major, _, minor = text.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def _uploaded_within(document: Mapping[str, Any], after: str | None, before: str | None) -> bool:
    uploaded = str(document.get("upload-time") or "")[:10]
    if not uploaded:
        return True
    return (not after or uploaded >= after) and (not before or uploaded <= before)


def _wheel_mismatch(filename: str, platforms: list[str], pythons: list) -> str:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return "invalid wheel file name"
    if platforms and not any(
        tag.platform == "any" or any(fnmatch.fnmatch(tag.platform, p) for p in platforms)
        for tag in tags
    ):
        return "wheel platform not mirrored"
    if pythons and not any(_supports(tag, py) for tag in tags for py in pythons):
        return "wheel Python version not mirrored"
    return ""


def _supports(tag, python: tuple[int, int]) -> bool:
    """Whether a wheel tag installs on CPython `python` (X.Y)."""
    interpreter, abi = tag.interpreter, tag.abi
    major, minor = python
    for prefix in ("cp", "py"):
        if interpreter.startswith(prefix):
            digits = interpreter[len(prefix) :]
            if digits == str(major):
                return True
            if digits and digits[0] == str(major) and digits[1:].isdigit():
                wanted = int(digits[1:])
                # abi3 wheels work on their minimum version and every later one.
                return wanted == minor or (abi == "abi3" and wanted <= minor)
            return False
    return True  # another implementation's tag: not ours to judge

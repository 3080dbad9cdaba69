"""Mirror filters of standard R mirrors: which package versions of a CRAN-like source enter.

Options (all optional, combined with AND; a list's values with OR):

- `packages`: specs `name [version constraints]`, R style (`ggplot2`, `dplyr (>= 1.1)`,
  `Rcpp (>= 1.0, < 2)`; `Rcpp >= 1.0` is read the same); only matching versions of these
  packages enter. Names are case-sensitive, as in R. Empty: every package.
- `exclude`: specs of package versions to drop (a bare name drops every version).
- `licenses`, `exclude_licenses`: license families (MIT, GPL, GPL2, GPL3, LGPL, BSD, APACHE,
  …) or identifiers a package's `License` must (must not) belong to. R's spellings are
  understood: `GPL (>= 2)` is GPL-2 (GPL, GPL2), `MIT + file LICENSE` is MIT, `GPL-2 | GPL-3`
  both.
- `r_version`: the R version clients run (`4.2.3`): packages whose `Depends: R (...)` it does
  not satisfy are dropped.
- `latest`: keep the N newest versions of each package (after the other filters).
- `dependencies`: with `packages`, also bring the packages they need (Depends, Imports,
  LinkingTo), recursively, within the source; they still pass every other filter. R itself
  and the packages that ship with R are not looked for. Default true.
- `archive`: also mirror the `src/contrib/Archive/` versions of the mirrored packages, those
  of the package list and of the dependencies it brings (the format reads their folders, see
  `archived_names`); switched off, the archived files leave. Default false.

Versions compare as R's `numeric_version` (`r_version` below). Each exclusion has a reason,
counted on the run.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import OptionsError
from .licenses import classify, normalize_license

CONTRIB = "src/contrib"
KEYS = {
    "packages",
    "exclude",
    "licenses",
    "exclude_licenses",
    "r_version",
    "latest",
    "dependencies",
    "archive",
}
#: Packages that ship with R: never looked for in a repository.
BASE_PACKAGES = frozenset(
    {
        "R",
        "base",
        "compiler",
        "datasets",
        "graphics",
        "grDevices",
        "grid",
        "methods",
        "parallel",
        "splines",
        "stats",
        "stats4",
        "tcltk",
        "tools",
        "utils",
    }
)
DEPENDENCY_FIELDS = ("Depends", "Imports", "LinkingTo")
_NAME = r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]"
_SPEC = re.compile(rf"\s*({_NAME})\s*(?:\((.*)\)|([<>=!].*))?\s*")
_CONSTRAINT = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([0-9]+(?:[.-][0-9]+)*)\s*")
#: A dependency as R reads one (`.clean_up_dependencies`, `.split_op_version`): the name is
#: the leading run of letters, digits and dots, whatever follows; a version constraint is in
#: the parentheses right after it.
_DEPENDENCY = re.compile(r"\s*([A-Za-z0-9.]+)\s*(?:\(([^)]*)\))?.*", re.DOTALL)
_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def r_version(text: str) -> tuple[int, ...]:
    """R's `numeric_version` order: numbers split on `.` and `-`, compared as integers
    ("1.10" > "1.9", "0.2-1" == "0.2.1", "1.0" < "1.0.0"). ValueError if not a version."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]+(?:[.-][0-9]+)*", text):
        raise ValueError(f"not an R version: {text!r}")
    return tuple(int(part) for part in re.split(r"[.-]", text))


Constraint = tuple[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Spec:
    """`name (op version, ...)`: a package and the versions it accepts."""

    name: str
    constraints: tuple[Constraint, ...] = ()

    def contains(self, version: tuple[int, ...]) -> bool:
        return all(_OPS[op](version, bound) for op, bound in self.constraints)

    def __str__(self) -> str:
        if not self.constraints:
            return self.name
        ranges = ", ".join(f"{op} {'.'.join(map(str, v))}" for op, v in self.constraints)
        return f"{self.name} ({ranges})"


def parse_spec(text: str) -> Spec:
    """A spec as written in the options; ValueError says why not."""
    match = _SPEC.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("expected 'name' or 'name (>= version, < version)'")
    ranges = match[2] if match[2] is not None else match[3]
    return Spec(match[1], _constraints(ranges) if ranges is not None else ())


def _constraints(text: str) -> tuple[Constraint, ...]:
    found = []
    for part in text.split(","):
        match = _CONSTRAINT.fullmatch(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not '<op> <version>' (>=, >, <=, <, ==, !=)")
        found.append((match[1], r_version(match[2])))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class RFile:
    """What the filters read of one package file."""

    key: str  # unique in the mirror: "unit/filename"
    unit: str
    filename: str
    version: str
    document: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.document.get("Package") or self.filename.split("_", 1)[0])


def clean(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated filter options (normalized); OptionsError says what is wrong."""
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise OptionsError(f"unknown R mirror options: {', '.join(unknown)}")
    cleaned: dict[str, Any] = {}
    for key in ("packages", "exclude"):
        if options.get(key) is not None:
            specs = sorted({str(spec) for spec in _specs(options[key], key)})
            if specs:
                cleaned[key] = specs
    for key in ("licenses", "exclude_licenses"):
        if options.get(key) is not None:
            values = options[key]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise OptionsError(f"{key} must be a list of license families or identifiers")
            normalized = []
            for value in values:
                license_ = normalize_license(value)
                if license_ is None:
                    raise OptionsError(f"{key}: {value!r} is not a license family or identifier")
                normalized.append(license_)
            if normalized:
                cleaned[key] = sorted(set(normalized))
    if options.get("r_version") is not None:
        value = options["r_version"]
        try:
            r_version(str(value))
        except ValueError:
            raise OptionsError(f"r_version: {value!r} is not an R version (e.g. 4.2.3)") from None
        cleaned["r_version"] = str(value).strip()
    if "latest" in options:
        value = options["latest"]
        if type(value) is not int or value < 1:
            raise OptionsError("latest must be a positive whole number")
        cleaned["latest"] = value
    for key in ("dependencies", "archive"):
        if key in options:
            if not isinstance(options[key], bool):
                raise OptionsError(f"{key} must be true or false")
            cleaned[key] = options[key]
    return cleaned


def _specs(values: Any, key: str) -> list[Spec]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise OptionsError(f"{key} must be a list of 'name (version constraints)'")
    found = []
    for value in values:
        try:
            found.append(parse_spec(value))
        except ValueError as exc:
            raise OptionsError(f"{key}: {value!r}: {exc}") from None
    return found


def _by_name(values: list[str]) -> dict[str, list[Spec]]:
    grouped: dict[str, list[Spec]] = defaultdict(list)
    for spec in _specs(values, "specs"):
        grouped[spec.name].append(spec)
    return grouped


def package_names(options: Mapping[str, Any]) -> list[str]:
    """The packages the package list names (empty: all)."""
    return sorted({spec.name for spec in _specs(options.get("packages", []), "packages")})


def archived_names(
    options: Mapping[str, Any], current: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """The packages whose Archive folder a mirror reads, given the source's current entries
    (name -> PACKAGES fields): every package `decide` may keep a version of. That is the listed
    packages (or all) and, with `dependencies`, the packages they need, recursively, by their
    current entries, as `decide` brings them in (an archived version is judged by its
    package's current entry) — less the packages no version of can enter: blocked whole, or
    whose current entry fails the license or R filters."""
    include = _by_name(options.get("packages", []))
    filters = _Filters.of(options)
    blocked = {s.name for s in _specs(options.get("exclude", []), "exclude") if not s.constraints}
    possible = {
        name
        for name, document in current.items()
        if name not in blocked and not filters.entry_reason(document)
    }
    if not include:
        return possible
    names = {name for name in include if name in possible}
    needed = list(names) if options.get("dependencies", True) else []
    while needed:
        for name in dependencies(current[needed.pop()]):
            if name in possible and name not in names:
                names.add(name)
                needed.append(name)
    return names


def parse_dependencies(text: str) -> list[tuple[str, tuple[Constraint, ...] | None]]:
    """(name, constraints) of a `Depends`-style field; constraints None when unreadable."""
    found = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _DEPENDENCY.fullmatch(part)
        if match is None:
            continue
        constraints: tuple[Constraint, ...] | None = ()
        if match[2] is not None:
            try:
                constraints = _constraints(" ".join(match[2].split()))
            except ValueError:
                constraints = None
        found.append((match[1], constraints))
    return found


def dependencies(document: Mapping[str, Any]) -> list[str]:
    """The packages a package needs from the repository (Depends, Imports, LinkingTo)."""
    names: list[str] = []
    for field in DEPENDENCY_FIELDS:
        for name, _ in parse_dependencies(str(document.get(field) or "")):
            if name not in BASE_PACKAGES and name not in names:
                names.append(name)
    return names


def r_license_families(text: str) -> frozenset[str]:
    """The families and identifiers of an R `License` field (R's spellings translated)."""
    text = re.sub(r"\+\s*file\s+LICEN[SC]E", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^\s*file\s+LICEN[SC]E\s*$", "", text, flags=re.IGNORECASE)
    # "GPL (>= 2)" -> "GPL-2": a version constraint names the version the license starts at.
    text = re.sub(r"\s*\(\s*(?:>=|==|>|<=|<)?\s*([0-9][0-9.]*)\s*\)", r"-\1", text)
    text = text.replace("_", "-")
    return classify(text)


def _needs_other_r(document: Mapping[str, Any], r: tuple[int, ...]) -> bool:
    """Whether the package's `Depends: R (...)` excludes R version `r`."""
    for name, constraints in parse_dependencies(str(document.get("Depends") or "")):
        if name == "R" and constraints is not None:
            if not all(_OPS[op](r, bound) for op, bound in constraints):
                return True
    return False


@dataclass(frozen=True, slots=True)
class _Filters:
    """The filters that judge a package by its current entry, whatever the version."""

    licenses: frozenset[str]
    blocked_licenses: frozenset[str]
    r_text: str | None
    r_target: tuple[int, ...] | None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> _Filters:
        text = options.get("r_version")
        return cls(
            frozenset(options.get("licenses", ())),
            frozenset(options.get("exclude_licenses", ())),
            text,
            r_version(text) if text else None,
        )

    def entry_reason(self, document: Mapping[str, Any]) -> str:
        """Why a package with this current entry is excluded ("" when it may enter)."""
        if self.licenses or self.blocked_licenses:
            families = r_license_families(str(document.get("License") or ""))
            if self.licenses and not families & self.licenses:
                return "license not allowed"
            if families & self.blocked_licenses:
                return "license excluded"
        if self.r_target is not None and _needs_other_r(document, self.r_target):
            return f"does not install on R {self.r_text}"
        return ""


def decide(options: Mapping[str, Any], files: Iterable[RFile]) -> dict[str, str]:
    """`key` -> why the file is excluded ("" when it enters)."""
    files = list(files)
    include = _by_name(options.get("packages", []))
    exclude = _by_name(options.get("exclude", []))
    filters = _Filters.of(options)
    latest = options.get("latest")
    with_dependencies = options.get("dependencies", True)
    # Archive files have no stanza: they are judged by their package's current entry.
    current = {f.name: f.document for f in files if f.unit == CONTRIB}
    decisions: dict[str, str] = {}
    # name -> [(version, file)] that pass every filter but the package list
    passing: dict[str, list[tuple[tuple[int, ...], RFile]]] = defaultdict(list)
    listed: dict[str, list[tuple[tuple[int, ...], RFile]]] = defaultdict(list)
    for file in files:
        try:
            version = r_version(file.version)
        except ValueError:
            decisions[file.key] = "invalid version"
            continue
        name = file.name
        document = _judged_by(file, current)
        reason = ""
        if file.unit != CONTRIB and not options.get("archive"):
            reason = "archive versions not mirrored"  # the option was switched off
        elif any(spec.contains(version) for spec in exclude.get(name, ())):
            reason = "excluded by the block list"
        else:
            reason = filters.entry_reason(document)
        decisions[file.key] = reason
        if reason:
            continue
        passing[name].append((version, file))
        if not include or any(spec.contains(version) for spec in include.get(name, ())):
            listed[name].append((version, file))
    entering: dict[str, list[tuple[tuple[int, ...], RFile]]] = {}
    for name, versions in listed.items():
        entering[name] = _newest(versions, latest, decisions)
    if include and with_dependencies:
        needed = [dep for fs in entering.values() for _, f in fs for dep in _needs(f, current)]
        while needed:
            name = needed.pop()
            if name in entering or name in include or name not in passing:
                continue  # entered, listed with its own versions, or not in the source
            entering[name] = _newest(passing[name], latest, decisions)
            needed.extend(dep for _, f in entering[name] for dep in _needs(f, current))
    for name, versions in passing.items():
        chosen = {f.key for _, f in entering.get(name, ())}
        for _, file in versions:
            if file.key not in chosen and not decisions[file.key]:
                decisions[file.key] = "not in the package list"
    return decisions


def _newest(versions, latest: int | None, decisions: dict[str, str]):
    """The versions kept (all, or the `latest` newest); the others get their reason."""
    if not latest:
        return versions
    kept = sorted({v for v, _ in versions}, reverse=True)[:latest]
    for version, file in versions:
        if version not in kept:
            decisions[file.key] = f"not among the latest {latest} versions"
    return [(v, f) for v, f in versions if v in kept]


def _judged_by(file: RFile, current: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    if file.unit == CONTRIB:
        return file.document
    return current.get(file.name, file.document)


def _needs(file: RFile, current: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return dependencies(_judged_by(file, current))

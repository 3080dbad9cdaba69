"""What the policy engine needs to know of each package type, in one place per ecosystem.

A policy of a package type reads its package rules (allow, block, exclusions, waivers) in that
ecosystem's syntax, compares versions by its rules and matches the OSV advisories of its
ecosystem only:

- conda: MatchSpecs and versions by py-rattler; OSV entries of ecosystem `conda` by name, and
  `PyPI` entries only through the conda→PyPI name mapping (`mapping.py`);
- Python: PEP 508 names with PEP 440 specifiers (`requests >=2.31`) by `packaging`; `PyPI`
  entries by normalized name;
- R: `name (>= 1.0)` specs and R's `numeric_version` order; `CRAN` and `Bioconductor` entries
  by exact (case-sensitive) name.

Pure Python, no Django: the engine, the benchmarks and the tests use it directly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version as PyVersion
from rattler import MatchSpec
from rattler import Version as CondaVersion

from channels_app.formats import cran_filters
from channels_app.formats.conda import (
    build_date,
    built_between,
    parse_match_spec,
    rattler_record,
)
from channels_app.formats.licenses import classify


@dataclass(slots=True)
class Candidate:
    """One package file as the engine reads it, whatever its ecosystem.

    `key` is `unit/filename`, unique in a mirror. `record` is the stored index entry (a conda
    repodata record, a PEP 691 file entry, a PACKAGES stanza). `first_seen`: when PSM first
    stored the entry, for date rules when the index gives no publication time.
    """

    unit: str
    filename: str
    name: str  # as the ecosystem normalizes it
    version: str
    record: Mapping[str, Any]
    first_seen: dt.date | None = None
    key: str = ""
    _parsed: Any = field(default=None, repr=False)  # the ecosystem's own form (rattler record)

    def __post_init__(self) -> None:
        self.key = f"{self.unit}/{self.filename}"


#: Candidates grouped for dependency lookups: pool key (`Ecosystem.pool_key`) -> name -> files.
Index = Mapping[str, Mapping[str, list[Candidate]]]


class Spec:
    """A package rule (`numpy >=1.26`, `requests <2.31`, `dplyr (>= 1.1)`): a name and the
    versions it covers; `text` is what the user wrote."""

    __slots__ = ("text", "name", "_match")

    def __init__(self, text: str, name: str, match) -> None:
        self.text, self.name, self._match = text, name, match

    def matches(self, candidate: Candidate) -> bool:
        return candidate.name == self.name and self._match(candidate)

    def __repr__(self) -> str:
        return f"Spec({self.text!r})"


class Ecosystem:
    """One package type's rules; subclasses hold all of it."""

    kind: ClassVar[str]  # the channel kind (`Channel.kind`, a format's `kind`)
    label: ClassVar[str]
    #: OSV ecosystems whose advisories name this type's packages directly.
    osv_ecosystems: ClassVar[frozenset[str]]
    #: The syntax of package rules, for help texts and errors.
    spec_syntax: ClassVar[str]
    spec_example: ClassVar[str]
    #: Policy rule kinds that cannot judge this type's packages (the index lacks the data).
    unsupported_rules: ClassVar[dict[str, str]] = {}
    #: The record field holding the package name.
    name_field: ClassVar[str] = "name"
    #: Whether `complete` fills in anything (then a file's license depends on other files).
    completes: ClassVar[bool] = False

    def normalize(self, name: str) -> str:
        return name

    def parse_spec(self, text: str) -> Spec:
        """A package rule; ValueError says what is wrong."""
        raise NotImplementedError

    def compare(self, a: str, b: str) -> int:
        """Order two versions (<0, 0, >0); raises for a version it cannot read."""
        raise NotImplementedError

    def name_of(self, unit: str, record: Mapping[str, Any]) -> str:
        """The package name of a file (as `normalize` gives it), from its unit and record."""
        return self.normalize(str(record.get(self.name_field) or ""))

    def candidate(
        self, unit: str, filename: str, version: str, record: Mapping[str, Any], **extra
    ) -> Candidate:
        return Candidate(unit, filename, self.name_of(unit, record), version, record, **extra)

    def compact(self, record: dict[str, Any], shared: dict) -> Mapping[str, Any]:
        """What the engine (and the mirror filters) read of a stored record, as small as it
        can be for holding a mirror's every file at once; `shared` (one per decision) keeps
        one copy of values many records repeat. The whole record, unless a type knows."""
        return record

    def published(self, candidate: Candidate) -> dt.date | None:
        """The day upstream published the file, from its index entry (None: not given)."""
        return self.published_in(candidate.record)

    def published_in(self, record: Mapping[str, Any]) -> dt.date | None:
        """`published` from the record alone."""
        return None

    def published_between(
        self, first: dt.date, last: dt.date
    ) -> Callable[[Mapping[str, Any]], bool]:
        """A test of whether a record's `published_in` is known and from `first` to `last`
        (both included)."""

        def between(record: Mapping[str, Any]) -> bool:
            day = self.published_in(record)
            return day is not None and first <= day <= last

        return between

    def licenses(self, candidate: Candidate) -> tuple[str, frozenset[str]] | None:
        """(license text, its families and identifiers); None when the index has no license
        field for this type (the license rules then see an unknown license)."""
        return self.licenses_of(self.license_fields(candidate.record))

    def license_fields(self, record: Mapping[str, Any]) -> Hashable:
        """What of a record its license is read from (`licenses_of`): files with the same
        fields have the same license, judged once."""
        return None

    def licenses_of(self, fields: Any) -> tuple[str, frozenset[str]] | None:
        """`licenses` from a record's `license_fields`."""
        return None

    def platform(self, candidate: Candidate) -> str:
        return self.platform_of(candidate.unit, candidate.record)

    def platform_of(self, unit: str, record: Mapping[str, Any]) -> str:
        """`platform` from a file's unit and record."""
        return ""

    def complete(self, candidates: list[Candidate]) -> None:
        """Fill in what some index entries lack from others of the same package (R's Archive
        listings give no license: the current version's is taken)."""

    def dependencies(self, candidate: Candidate, index: Index) -> Iterable[tuple[str, list]]:
        """Each dependency of the candidate (as written) with the candidates of `index` that
        satisfy it. Types whose index lists no dependencies have none."""
        return ()

    def pool_key(self, candidate: Candidate) -> str:
        """Which group of `Index` the candidate belongs to (conda: its platform)."""
        return ""


class CondaEcosystem(Ecosystem):
    kind = "conda"
    label = "conda"
    osv_ecosystems = frozenset({"conda"})
    spec_syntax = "conda MatchSpecs"
    spec_example = "numpy >=1.26"

    def normalize(self, name: str) -> str:
        return name.lower()

    def name_of(self, unit: str, record: Mapping[str, Any]) -> str:
        return str(record.get("name") or "").lower()  # `normalize`, a call less per file

    def parse_spec(self, text: str) -> Spec:
        spec = parse_match_spec(text)
        return Spec(text.strip(), spec.name.normalized, lambda c: spec.matches(_rattler(c)))

    def compare(self, a: str, b: str) -> int:
        left, right = CondaVersion(a), CondaVersion(b)
        return (left > right) - (left < right)

    #: The keys of a repodata record the engine reads (dates, licenses, platform,
    #: dependencies, MatchSpecs through `rattler_record`); conda mirrors have no filters.
    ENGINE_KEYS = (
        "name",
        "version",
        "build",
        "build_number",
        "subdir",
        "depends",
        "license",
        "license_family",
        "timestamp",
    )
    _SHARED_KEYS = ("subdir", "license", "license_family")

    def compact(self, record: dict[str, Any], shared: dict) -> Mapping[str, Any]:
        """Only ENGINE_KEYS (a third of a conda-forge record's memory goes: hashes, sizes,
        `constrains`), repeated strings and `depends` lists held once."""
        if not isinstance(record, dict):
            return record
        kept = {key: record[key] for key in self.ENGINE_KEYS if key in record}
        setdefault = shared.setdefault
        for key in self._SHARED_KEYS:
            value = kept.get(key)
            if type(value) is str:
                kept[key] = setdefault(value, value)
        depends = kept.get("depends")
        if type(depends) is list:
            try:
                depends = tuple(depends)
                kept["depends"] = setdefault(depends, depends)  # tuples and strs never collide
            except TypeError:  # unhashable items: kept as they are
                pass
        return kept

    def published_in(self, record: Mapping[str, Any]) -> dt.date | None:
        return build_date(record)

    def published_between(
        self, first: dt.date, last: dt.date
    ) -> Callable[[Mapping[str, Any]], bool]:
        return built_between(first, last)

    def license_fields(self, record: Mapping[str, Any]) -> tuple[Any, Any]:
        return record.get("license") or None, record.get("license_family") or None

    def licenses_of(self, fields: tuple[Any, Any]) -> tuple[str, frozenset[str]]:
        text, family = fields
        return str(text or ""), classify(text, family)

    def platform_of(self, unit: str, record: Mapping[str, Any]) -> str:
        return unit or str(record.get("subdir") or "")

    def pool_key(self, candidate: Candidate) -> str:
        return self.platform(candidate)

    def dependencies(self, candidate, index):
        """Same platform or noarch; virtual packages (`__glibc`) are not looked for."""
        platform = self.platform(candidate)
        pools = [index.get(platform, {})]
        if platform != "noarch":
            pools.append(index.get("noarch", {}))
        for text in candidate.record.get("depends") or ():
            spec = _match_spec(text)
            if spec is None or spec.name.normalized.startswith("__"):
                continue
            name = spec.name.normalized
            yield text, [c for p in pools for c in p.get(name, ()) if spec.matches(_rattler(c))]


def _rattler(candidate: Candidate):
    if candidate._parsed is None:
        candidate._parsed = rattler_record(candidate.record)
    return candidate._parsed


@lru_cache(maxsize=200_000)
def _match_spec(text: str) -> MatchSpec | None:
    """A depends string as a MatchSpec; None if rattler cannot read it (matches nothing)."""
    try:
        return MatchSpec(text)
    except Exception:
        return None


class PythonEcosystem(Ecosystem):
    kind = "pypi"
    label = "standard Python"
    osv_ecosystems = frozenset({"PyPI"})
    spec_syntax = "project names with PEP 440 version specifiers"
    spec_example = "requests >=2.31"
    unsupported_rules = {
        "platforms": "platforms are conda's; filter wheels by platform in the mirror's options",
        "licenses": "a Python simple index gives no license",
        "include_dependencies": "a Python simple index gives no dependencies",
        "legacy_packages": "legacy .tar.bz2 files are conda's",
    }

    def normalize(self, name: str) -> str:
        return canonicalize_name(name)

    def parse_spec(self, text: str) -> Spec:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise ValueError(f"not 'name [specifiers]': {exc}") from None
        if requirement.url or requirement.marker or requirement.extras:
            raise ValueError("only a name and version specifiers are allowed")
        specifier = requirement.specifier

        def match(candidate: Candidate) -> bool:
            try:
                return specifier.contains(PyVersion(candidate.version), prereleases=True)
            except InvalidVersion:
                return not specifier  # a bare name covers every file of the project

        return Spec(text.strip(), canonicalize_name(requirement.name), match)

    def compare(self, a: str, b: str) -> int:
        left, right = PyVersion(a), PyVersion(b)
        return (left > right) - (left < right)

    def name_of(self, unit: str, record: Mapping[str, Any]) -> str:
        return canonicalize_name(unit)  # a unit is a project

    def published_in(self, record: Mapping[str, Any]) -> dt.date | None:
        return _iso_day(record.get("upload-time"))


class REcosystem(Ecosystem):
    kind = "cran"
    label = "standard R"
    osv_ecosystems = frozenset({"CRAN", "Bioconductor"})
    spec_syntax = "R package names with version constraints"
    spec_example = "dplyr (>= 1.1)"
    name_field = "Package"
    unsupported_rules = {
        "platforms": "platforms are conda's",
        "legacy_packages": "legacy .tar.bz2 files are conda's",
    }
    completes = True  # an Archive version's license is the current version's

    def parse_spec(self, text: str) -> Spec:
        spec = cran_filters.parse_spec(text)

        def match(candidate: Candidate) -> bool:
            try:
                return spec.contains(cran_filters.r_version(candidate.version))
            except ValueError:
                return not spec.constraints

        return Spec(text.strip(), spec.name, match)

    def compare(self, a: str, b: str) -> int:
        left, right = cran_filters.r_version(a), cran_filters.r_version(b)
        return (left > right) - (left < right)

    def published_in(self, record: Mapping[str, Any]) -> dt.date | None:
        return _iso_day(record.get("Date/Publication"))

    def complete(self, candidates: list[Candidate]) -> None:
        current = {c.name: c.record for c in candidates if c.unit == cran_filters.CONTRIB}
        for candidate in candidates:
            if "License" not in candidate.record and candidate.name in current:
                found = current[candidate.name].get("License")
                if found:
                    candidate.record = {**candidate.record, "License": found}

    def license_fields(self, record: Mapping[str, Any]) -> str:
        return str(record.get("License") or "")

    def licenses_of(self, fields: str) -> tuple[str, frozenset[str]]:
        return fields, cran_filters.r_license_families(fields) if fields else frozenset()

    def dependencies(self, candidate, index):
        """Depends, Imports and LinkingTo, with their version constraints; R itself and the
        packages that ship with it are not looked for."""
        for fieldname in cran_filters.DEPENDENCY_FIELDS:
            text = str(candidate.record.get(fieldname) or "")
            for name, constraints in cran_filters.parse_dependencies(text):
                if name in cran_filters.BASE_PACKAGES:
                    continue
                spec = cran_filters.Spec(name, constraints or ())
                pool = index.get("", {}).get(name, ())
                yield str(spec), [c for c in pool if _r_satisfies(spec, c.version)]


def _r_satisfies(spec: cran_filters.Spec, version: str) -> bool:
    try:
        return spec.contains(cran_filters.r_version(version))
    except ValueError:
        return False


def _iso_day(value: Any) -> dt.date | None:
    """The day of an ISO 8601 or R `Date/Publication` time ("2024-01-15 10:20:03 UTC")."""
    try:
        return dt.date.fromisoformat(str(value or "")[:10])
    except ValueError:
        return None


ECOSYSTEMS: dict[str, Ecosystem] = {
    eco.kind: eco for eco in (CondaEcosystem(), PythonEcosystem(), REcosystem())
}


def ecosystem_for(kind: str) -> Ecosystem:
    """The ecosystem of a package type (a channel's `kind`); KeyError for an unknown one."""
    return ECOSYSTEMS[kind]

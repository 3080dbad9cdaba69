"""Deterministic in-memory data for the decision benchmarks: one case per package type.

Each case makes the files of a mirror (as `packages_decide` reads them: candidates built by
the ecosystem) and a Decider with every rule kind that applies to that package type, its
advisories, waivers and, for Python and R, the mirror's filters. No database, no randomness
that differs between runs: file i is the same in every run, and the rules name files that
exist at any size, so a small run still exercises every rule kind.

- conda: `gen_conda.record` shapes, spread over five platforms (by package), publication days
  from 2016 to the day before "today", depends on other generated packages (so the
  dependency closure has work to do), a `.tar.bz2` twin of every tenth `.conda` (the legacy
  rule), 1% without a license; `conda` advisories by name and PyPI advisories through the
  conda name mapping, every 25th a `MAL-` entry.
- Python: PEP 691 file entries (sdists and wheels of several platforms, a pre-release, 1%
  yanked) with `upload-time`; PyPI advisories, every 25th a `MAL-` entry.
- R: PACKAGES stanzas (Depends with an R version, Imports and LinkingTo of other generated
  packages, R license spellings, Date/Publication) plus Archive versions; CRAN advisories.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from benchmarks.gen_conda import record as conda_record
from channels_app.formats import get_format
from policies_app.ecosystems import Candidate, ecosystem_for
from policies_app.engine import Advisory, AdvisoryIndex, CompiledPolicy, Decider, WaiverRule
from policies_app.models import Policy

TODAY = dt.date(2026, 12, 1)
FIRST_DAY = dt.date(2016, 1, 1)
SPAN_DAYS = (TODAY - FIRST_DAY).days
WAIVED_UNTIL = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
HIGH, LOW = Decimal("9.8"), Decimal("5.0")


@dataclass
class Case:
    """One package type's benchmark: how to make its files, and its rules."""

    kind: str
    files: int
    describe: str
    make_candidates: Callable[[], list[Candidate]]
    policy: Policy
    advisories: list[Advisory]
    mapping: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    waivers: list[tuple[str, str]] = field(default_factory=list)  # (package rule, rule/id)
    filters: Mapping[str, Any] | None = None

    def decider(self) -> Decider:
        """Compile the policy with its advisories and waivers, as `decider_for` does."""
        eco = ecosystem_for(self.kind)
        waivers = [
            WaiverRule(eco.parse_spec(spec), rule, "bench", WAIVED_UNTIL, "benchmark")
            for spec, rule in self.waivers
        ]
        compiled = CompiledPolicy(
            self.policy,
            AdvisoryIndex(eco, self.advisories, self.mapping),
            today=TODAY,
            ecosystem=eco,
            waivers=waivers,
        )
        return Decider(compiled, _filters(self.kind, self.filters))


def _filters(kind: str, options: Mapping[str, Any] | None):
    """The mirror filters as `mirrors_app.sync.policy.decider_for` wraps them."""
    fmt = get_format(kind)
    if not options or not fmt.capabilities.filters_files:
        return None

    def filters(candidates: list[Candidate]) -> dict[str, str]:
        files = ((c.key, c.unit, c.filename, c.version, c.record) for c in candidates)
        return fmt.filter_files(options, files)

    return filters


def _day(i: int) -> dt.date:
    """A publication day from 2016 to yesterday, scattered (a multiplicative hash of i)."""
    return FIRST_DAY + dt.timedelta(days=1 + (i * 2_654_435_761) % (SPAN_DAYS - 1))


def _spread(count: int, total: int, offset: int = 0) -> list[int]:
    """`count` indexes spread over range(total) (repeats when count > total); each is one
    further than an even step, so they do not all fall on the same residue of the data's
    cycles (licenses, platforms, versions)."""
    return [(k * total // max(count, 1) + k + offset) % total for k in range(count)]


def _ranges(fixed: str) -> list[dict]:
    return [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]


def _advisory(n: int, prefix: str, ecosystem: str, name: str, fixed: str) -> Advisory:
    """Advisory n: every 25th malicious (all versions), else scored high, low or not at all,
    every 9th with the status `active`."""
    if n % 25 == 12:
        affected = [{"ecosystem": ecosystem, "name": name, "ranges": _ranges("999")}]
        return Advisory(f"MAL-2025-{n}", None, "reported", affected, malicious=True)
    score = (HIGH, LOW, None)[n % 3]
    status = "active" if n % 9 == 0 else "reported"
    affected = [{"ecosystem": ecosystem, "name": name, "ranges": _ranges(fixed)}]
    return Advisory(f"{prefix}-{n:05d}", score, status, affected, (f"CVE-2024-{n:05d}",))


# --- conda -----------------------------------------------------------------------------------

#: Platform of package p by p % 100: most linux-64, some noarch, osx-arm64, win-64, win-32.
PLATFORMS = [(70, "linux-64"), (85, "noarch"), (95, "osx-arm64"), (99, "win-64"), (100, "win-32")]


def conda_platform(package: int) -> str:
    slot = package % 100
    return next(name for bound, name in PLATFORMS if slot < bound)


def conda_file(i: int) -> tuple[str, str, dict]:
    """(subdir, filename, record) of conda file i (package i // 20, as gen_conda names it)."""
    package = i // 20
    subdir = conda_platform(package)
    twin = i % 10 == 0  # a .tar.bz2 of the same build as the next file, a .conda
    src = i + 1 if twin else i
    filename, record = conda_record(src, subdir)
    record = dict(record)
    if twin:
        filename = filename.removesuffix(".conda") + ".tar.bz2"
        record["sha256"] = hashlib.sha256(filename.encode()).hexdigest()
    day = _day(src)
    record["timestamp"] = int(
        dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp() * 1000
    )
    if package:  # each package needs up to three older ones (same deps for all its files)
        deps = [f"pkg-{(package * 7 + k * 13) % package:06d} >={k * 3}" for k in range(src % 4)]
        record["depends"] = record["depends"] + deps
    if src % 97 == 0:
        record.pop("license", None)
        record.pop("license_family", None)
    return subdir, filename, record


def conda_case(records: int, advisories: int, waivers: int = 100) -> Case:
    packages = max(records // 20, 1)
    eco = ecosystem_for("conda")

    def make() -> list[Candidate]:
        out = []
        for i in range(records):
            subdir, filename, record = conda_file(i)
            out.append(
                eco.candidate(subdir, filename, record["version"], record, first_seen=_day(i))
            )
        return out

    names = [f"pkg-{p:06d}" for p in range(packages)]
    allow = [names[p] for p in _spread(max(packages // 50, 2), packages)]
    allow += [f"{names[p]} >=5" for p in _spread(max(packages // 500, 1), packages, 7)]
    allow.append(f"{names[packages // 3]}[build=*_2]")
    block = [f"{names[p]} >=20" for p in _spread(max(packages // 300, 5), packages, 3)]
    block.append(f"{names[packages // 2]}[build=*_1]")
    policy = Policy(
        name="bench-conda",
        package_type="conda",
        platforms_include=["linux-64", "osx-arm64"],  # without noarch: noarch deps admitted
        platforms_exclude=["win-32"],
        licenses_exclude=["GPL3", "AGPL"],
        unknown_license="block",
        cve_score=Decimal("7"),
        cve_score_comparator="<",
        cve_statuses_excluded=["active"],
        allow_specs=allow,
        block_specs=block,
        include_dependencies=True,
        created_after=dt.date(2017, 1, 1),
        created_before=dt.date(2026, 11, 25),
        min_age_days=30,
        exclusions=[names[packages // 4], f"{names[packages // 5]} <5"],
        legacy_packages=False,
    )
    # Advisories: 60% of conda's own ecosystem by name, 40% PyPI ones through the mapping
    # (every third package has a PyPI name).
    mapping = {names[p]: [("PyPI", f"py-{names[p]}")] for p in range(0, packages, 3)}
    found: list[Advisory] = []
    direct = advisories * 3 // 5
    for n, p in enumerate(_spread(direct, packages, 1)):
        found.append(_advisory(n, "CONDA", "conda", names[p], str(5 + n % 20)))
    mapped = list(mapping)
    conda_names = {names[p]: names[p] for p in range(packages)}
    conda_names.update((pypi[0][1], name) for name, pypi in mapping.items())
    for n, k in enumerate(_spread(advisories - direct, len(mapped), 2), start=direct):
        found.append(_advisory(n, "GHSA", "PyPI", mapping[mapped[k]][0][1], str(5 + n % 20)))
    return Case(
        kind="conda",
        files=records,
        describe=f"{records:,} files of {packages:,} packages over 5 platforms",
        make_candidates=make,
        policy=policy,
        advisories=found,
        mapping=mapping,
        waivers=_waivers(found, waivers, conda_names.get, ("cooldown", "license", "legacy")),
    )


def _waivers(
    advisories: list[Advisory], count: int, package_of: Callable[[str], Any], rules: tuple
) -> list[tuple[str, str]]:
    """Half the waivers name a blocking advisory for the package it concerns, half a rule kind
    for a package an advisory names (`package_of`: the advisory's package name -> the
    mirror's)."""
    found = []
    blocking = [a for a in advisories if a.malicious or a.score == HIGH or a.status == "active"]
    for k in _spread(count // 2, len(blocking), 1):
        advisory = blocking[k]
        found.append((package_of(advisory.affected[0]["name"]), advisory.id))
    for k in range(count - len(found)):
        advisory = advisories[(k * 7919) % len(advisories)]
        found.append((package_of(advisory.affected[0]["name"]), rules[k % len(rules)]))
    return found


# --- Python ----------------------------------------------------------------------------------

WHEELS = (
    "py3-none-any",
    "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp312-cp312-win_amd64",
    "cp39-cp39-macosx_11_0_arm64",
)


def python_file(project: int, j: int) -> tuple[str, str, str, dict]:
    """(project, filename, version, PEP 691 entry) of file j of a project: version j // 2
    (the third a pre-release), an sdist then a wheel."""
    name = f"proj-{project:06d}"
    v = j // 2
    version = f"{1 + project % 5}.{v}.0" + ("rc1" if v == 2 else "")
    stem = f"proj_{project:06d}-{version}"
    if j % 2 == 0:
        filename = f"{stem}.tar.gz"
    else:
        filename = f"{stem}-{WHEELS[(project + v) % len(WHEELS)]}.whl"
    digest = hashlib.blake2b(f"{project}/{j}".encode(), digest_size=32).hexdigest()
    day = _day(project * 8 + j)
    entry = {
        "filename": filename,
        "hashes": {"sha256": digest},
        "requires-python": ">=3.8",
        "size": 10_000 + (project * 7919 + j * 104_729) % 60_000_000,
        "upload-time": f"{day.isoformat()}T12:00:00.000000Z",
        "yanked": (project + j) % 100 == 0,
    }
    if filename.endswith(".whl"):
        entry["core-metadata"] = {"sha256": digest[::-1]}
    return name, filename, version, entry


def python_case(projects: int, files_per_project: int, advisories: int, waivers: int = 100) -> Case:
    eco = ecosystem_for("pypi")

    def make() -> list[Candidate]:
        out = []
        for p in range(projects):
            for j in range(files_per_project):
                name, filename, version, entry = python_file(p, j)
                out.append(
                    eco.candidate(name, filename, version, entry, first_seen=_day(p * 8 + j))
                )
        return out

    names = [f"proj-{p:06d}" for p in range(projects)]
    allow = [f"{names[p]} >=1" for p in _spread(max(projects // 10, 2), projects)]
    block = [f"{names[p]} <3" for p in _spread(max(projects // 400, 5), projects, 5)]
    policy = Policy(
        name="bench-pypi",
        package_type="pypi",
        cve_score=Decimal("7"),
        cve_score_comparator="<",
        cve_statuses_excluded=["active"],
        allow_specs=allow,
        block_specs=block,
        created_after=dt.date(2017, 1, 1),
        created_before=dt.date(2026, 11, 25),
        min_age_days=14,
        exclusions=[names[p] for p in _spread(max(projects // 4000, 1), projects, 11)],
    )
    # Advisories on the allowed projects first (what a curated mirror would see), then the rest.
    found = []
    for n, p in enumerate(_spread(advisories, projects, 0)):
        found.append(_advisory(n, "GHSA", "PyPI", names[p], f"{1 + p % 5}.1"))
    filters = {
        "package_types": ["sdist", "wheel"],
        "platforms": ["manylinux*_x86_64", "win_amd64"],
        "python_versions": ["3.11", "3.12"],
        "prereleases": False,
        "latest": 2,
        "yanked": False,
        "max_size": 50_000_000,
        "uploaded_after": "2016-03-01",
        "exclude": [f"{names[p]} <2" for p in _spread(max(projects // 1000, 1), projects, 9)],
    }
    return Case(
        kind="pypi",
        files=projects * files_per_project,
        describe=f"{projects:,} projects x {files_per_project} files",
        make_candidates=make,
        policy=policy,
        advisories=found,
        waivers=_waivers(found, waivers, eco.normalize, ("cooldown", "allow-list", "block")),
        filters=filters,
    )


# --- R ---------------------------------------------------------------------------------------

R_LICENSES = [
    "GPL (>= 2)",
    "MIT + file LICENSE",
    "GPL-2 | GPL-3",
    "GPL-3",
    "BSD_3_clause + file LICENSE",
    "Apache License (== 2.0)",
    "LGPL-2.1",
    "AGPL-3",
    "CC0",
    "file LICENSE",  # unknown
]


def r_version(package: int, older: int = 0) -> str:
    """The current version of a package (older=0) or its older-th archived one."""
    minor = package % 10 + 3 - older
    return f"{1 + package % 3}.{minor}-{package % 4}"


def r_files(package: int) -> list[tuple[str, str, str, dict]]:
    """(unit, filename, version, record) of a package's current file and its archived ones
    (package % 4 of them, judged by the current entry; they have no stanza of their own)."""
    name = f"pkg{package:05d}"
    version = r_version(package)
    imports = [f"pkg{(package * 7 + k * 13) % package:05d} (>= 1.0)" for k in range(package % 5)]
    stanza = {
        "Package": name,
        "Version": version,
        "Depends": "R (>= 4.3.0)" if package % 20 == 0 else "R (>= 3.5.0), methods",
        "License": R_LICENSES[package % len(R_LICENSES)],
        "MD5sum": hashlib.md5(name.encode()).hexdigest(),
        "NeedsCompilation": "yes" if package % 3 == 0 else "no",
        "Date/Publication": f"{_day(package).isoformat()} 10:20:03 UTC",
    }
    if package and imports:
        stanza["Imports"] = ", ".join(imports)
    if package > 10 and package % 6 == 0:
        stanza["LinkingTo"] = f"pkg{package % 10:05d}"
    files = [("src/contrib", f"{name}_{version}.tar.gz", version, stanza)]
    for older in range(1, package % 4 + 1):
        old = r_version(package, older)
        files.append(
            (
                f"src/contrib/Archive/{name}",
                f"{name}_{old}.tar.gz",
                old,
                {"Package": name, "Version": old},
            )
        )
    return files


def r_case(packages: int, advisories: int, waivers: int = 50) -> Case:
    eco = ecosystem_for("cran")
    count = sum(1 + p % 4 for p in range(packages))

    def make() -> list[Candidate]:
        out = []
        for p in range(packages):
            for k, (unit, filename, version, record) in enumerate(r_files(p)):
                first_seen = _day(p * 4 + k)
                out.append(eco.candidate(unit, filename, version, record, first_seen=first_seen))
        return out

    names = [f"pkg{p:05d}" for p in range(packages)]
    allow = [f"{names[p]} (>= 1.0)" for p in _spread(max(packages // 7, 2), packages)]
    block = [f"{names[p]} (>= 1.0)" for p in _spread(max(packages // 200, 5), packages, 4)]
    policy = Policy(
        name="bench-cran",
        package_type="cran",
        licenses_exclude=["AGPL"],
        # Archive versions have no License field of their own ("block" would drop them all).
        unknown_license="allow",
        cve_score=Decimal("7"),
        cve_score_comparator="<",
        cve_statuses_excluded=["active"],
        allow_specs=allow,
        block_specs=block,
        include_dependencies=True,
        created_after=dt.date(2017, 1, 1),
        created_before=dt.date(2026, 11, 25),
        min_age_days=30,
        exclusions=[names[p] for p in _spread(max(packages // 2000, 2), packages, 6)]
        + [f"{names[p]} (>= 2.0)" for p in _spread(max(packages // 2000, 1), packages, 17)],
    )
    found = []
    for n, p in enumerate(_spread(advisories, packages, 2)):
        # Half affect every version of the package, half its oldest Archive versions.
        fixed = f"{1 + p % 3}.{p % 10 + (4 if n % 2 else 2)}"
        found.append(_advisory(n, "RSEC", "CRAN", names[p], fixed))
    filters = {
        "r_version": "4.2.3",
        "exclude_licenses": ["GPL2"],
        "exclude": [f"{names[p]} (< 2.0)" for p in _spread(max(packages // 500, 1), packages, 8)],
        "latest": 3,
        "archive": True,
    }
    return Case(
        kind="cran",
        files=count,
        describe=f"{packages:,} packages, {count:,} files (current + Archive)",
        make_candidates=make,
        policy=policy,
        advisories=found,
        waivers=_waivers(found, waivers, eco.normalize, ("cooldown", "license", "allow-list")),
        filters=filters,
    )

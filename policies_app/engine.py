"""The policy engine: a policy compiled once per run decides every package, with a reason.

Pure: no database query per package. Rule kinds combine with AND, values within one kind with
OR. Order of a decision (the first that applies gives the reason):

1. an exclusion MatchSpec matches → kept, whatever the other rules say;
2. platform, license, CVE score, CVE status, creation date, cooldown and block rules;
3. with allow rules (package rules that allow), only matching packages are kept, plus, with
   "include dependencies", the dependency closure of those (per platform, with noarch), which
   still had to pass step 2;
4. without "legacy packages", a `.tar.bz2` whose build also exists as `.conda` is dropped.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rattler import MatchSpec, Version

from channels_app.formats.conda import build_date, parse_match_spec, rattler_record
from channels_app.formats.licenses import classify, normalize_license

from .osv_matching import affects


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a package may enter, and why (why not, or why it was kept specially)."""

    allowed: bool
    reason: str = ""


ALLOWED = Decision(True)
NOT_LISTED = Decision(False, "not in the allow list")


@dataclass(slots=True)
class Entry:
    """What the engine reads of one package (a conda repodata record)."""

    filename: str
    record: Mapping[str, Any]
    subdir: str = ""
    name: str = ""  # lower case, as package names compare
    version: str = ""
    key: str = ""  # "subdir/filename": unique in a channel
    _rattler: Any = None

    def __post_init__(self) -> None:
        self.name = str(self.record.get("name", "")).lower()
        self.version = str(self.record.get("version", ""))
        self.subdir = self.subdir or str(self.record.get("subdir") or "")
        self.key = f"{self.subdir}/{self.filename}"

    @property
    def rattler(self):
        if self._rattler is None:
            self._rattler = rattler_record(self.record)
        return self._rattler

    @property
    def depends(self) -> list[str]:
        return list(self.record.get("depends") or [])

    @property
    def built_on(self) -> dt.date | None:
        return build_date(self.record)


@dataclass(frozen=True)
class Advisory:
    """A vulnerability as the engine uses it (from the Vulnerability model)."""

    id: str
    score: Decimal | None
    status: str
    affected: list[dict] = field(default_factory=list)


class _Specs:
    """MatchSpecs indexed by package name, so a package is only matched against its own."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.by_name: dict[str, list[tuple[str, MatchSpec]]] = defaultdict(list)
        for text in texts:
            spec = parse_match_spec(text)
            self.by_name[spec.name.normalized].append((text, spec))

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def match(self, entry: Entry) -> str | None:
        """The text of the first spec matching the entry, or None."""
        for text, spec in self.by_name.get(entry.name, ()):
            if spec.matches(entry.rattler):
                return text
        return None


_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_NEGATED = {"<": "≥", "<=": ">", ">": "≤", ">=": "<"}


def _compare_versions(a: str, b: str) -> int:
    left, right = Version(a), Version(b)
    return (left > right) - (left < right)


class CompiledPolicy:
    """A policy ready to decide packages; build once per run with `compile_policy`."""

    def __init__(self, policy, advisories: Iterable[Advisory] = (), *, today: dt.date) -> None:
        self.policy = policy
        self.platforms_in = frozenset(policy.platforms_include or ())
        self.platforms_out = frozenset(policy.platforms_exclude or ())
        self.licenses_in = frozenset(normalize_license(v) for v in policy.licenses_include or ())
        self.licenses_out = frozenset(normalize_license(v) for v in policy.licenses_exclude or ())
        self.unknown_license_ok = policy.unknown_license == "allow"
        self.score = policy.cve_score
        self.comparator = policy.cve_score_comparator
        self.statuses_out = frozenset(policy.cve_statuses_excluded or ())
        self.allow = _Specs(policy.allow_specs or ())
        self.block = _Specs(policy.block_specs or ())
        self.exclusions = _Specs(policy.exclusions or ())
        self.include_dependencies = bool(policy.include_dependencies)
        self.after = policy.created_after
        self.before = policy.created_before
        self.newest = (
            today - dt.timedelta(days=policy.min_age_days) if policy.min_age_days else None
        )
        self.legacy = bool(policy.legacy_packages)
        self.advisories: dict[str, list[tuple[Advisory, dict]]] = defaultdict(list)
        if self.score is not None or self.statuses_out:
            for advisory in advisories:
                for affected in advisory.affected:
                    name = str(affected.get("name", "")).lower()
                    if name:
                        self.advisories[name].append((advisory, affected))

    # --- One package, every rule but the allow list ---------------------------------------

    def check(self, entry: Entry, *, any_platform: bool = False) -> str | None:
        """Why the rules of step 2 drop the entry, or None if it passes them."""
        subdir = entry.subdir
        if any_platform:
            pass
        elif self.platforms_in and subdir not in self.platforms_in:
            return f"platform {subdir} is not included"
        if subdir in self.platforms_out:
            return f"platform {subdir} is excluded"
        if self.licenses_in or self.licenses_out:
            reason = self._license(entry)
            if reason:
                return reason
        if self.advisories:
            reason = self._cves(entry)
            if reason:
                return reason
        if self.after or self.before or self.newest:
            reason = self._dates(entry)
            if reason:
                return reason
        if self.block:
            spec = self.block.match(entry)
            if spec:
                return f"blocked by package rule {spec!r}"
        return None

    def _license(self, entry: Entry) -> str | None:
        record = entry.record
        classes = classify(record.get("license") or None, record.get("license_family") or None)
        if not classes:
            return None if self.unknown_license_ok else "license unknown"
        if self.licenses_in and not classes & self.licenses_in:
            return f"license {record.get('license')} is not included"
        hit = classes & self.licenses_out
        if hit:
            return f"license {record.get('license')} is excluded ({', '.join(sorted(hit))})"
        return None

    def _cves(self, entry: Entry) -> str | None:
        found = [
            advisory
            for advisory, affected in self.advisories.get(entry.name, ())
            if _affects(affected, entry.version)
        ]
        if not found:
            return None
        for advisory in found:
            if advisory.status in self.statuses_out:
                return f"{advisory.id} status {advisory.status} is excluded"
        scored = [a for a in found if a.score is not None]
        if self.score is not None and scored:
            worst = max(scored, key=lambda a: a.score)
            if not _COMPARE[self.comparator](worst.score, self.score):
                return f"{worst.id} score {worst.score} {_NEGATED[self.comparator]} {self.score}"
        return None

    def _dates(self, entry: Entry) -> str | None:
        built = entry.built_on
        if built is None:
            return None  # no timestamp: the date rules cannot judge it
        if self.after and built < self.after:
            return f"built {built}, before {self.after}"
        if self.before and built > self.before:
            return f"built {built}, after {self.before}"
        if self.newest and built > self.newest:
            return f"built {built}, newer than the {self.policy.min_age_days}-day cooldown"
        return None

    # --- Every package together ---------------------------------------------------------------

    def decide_all(self, entries: Iterable[Entry]) -> dict[str, Decision]:
        """Decide every entry (keyed by `subdir/filename`), the closure and legacy rule included."""
        entries = list(entries)
        decisions: dict[str, Decision] = {}
        passing: list[Entry] = []
        dropped: dict[str, Decision] = {}  # one Decision per reason, shared
        exclusions, check = self.exclusions, self.check
        for entry in entries:
            spec = exclusions.match(entry) if exclusions else None
            if spec:
                decisions[entry.key] = Decision(True, f"kept by exclusion {spec!r}")
                continue
            reason = check(entry)
            if reason:
                decision = dropped.get(reason)
                if decision is None:
                    decision = dropped[reason] = Decision(False, reason)
                decisions[entry.key] = decision
            else:
                passing.append(entry)
        if self.allow:
            allowed = [e for e in passing if self.allow.match(e)]
            via = self.closure(allowed, passing) if self.include_dependencies else {}
            allowed_keys = {e.key for e in allowed}
            for entry in passing:
                key = entry.key
                if key in allowed_keys:
                    decisions[key] = ALLOWED
                elif key in via:
                    decisions[key] = Decision(True, f"dependency of {via[key]}")
                else:
                    decisions[key] = NOT_LISTED
        else:
            for entry in passing:
                decisions[entry.key] = ALLOWED
        if self.platforms_in and "noarch" not in self.platforms_in:
            self._admit_noarch_dependencies(entries, decisions)
        if not self.legacy:
            self._drop_legacy(entries, decisions)
        return decisions

    def _admit_noarch_dependencies(
        self, entries: list[Entry], decisions: dict[str, Decision]
    ) -> None:
        """A platform rule without noarch still brings the noarch packages that the allowed
        platform packages need (they must pass every other rule)."""
        noarch = [
            e
            for e in entries
            if e.subdir == "noarch"
            and not decisions[e.key].allowed
            and self.check(e, any_platform=True) is None
            and (not self.allow or self.allow.match(e) or self.include_dependencies)
        ]
        if not noarch:
            return
        roots = [e for e in entries if e.subdir != "noarch" and decisions[e.key].allowed]
        for key, parent in self.closure(roots, noarch).items():
            if key.startswith("noarch/"):
                decisions[key] = Decision(True, f"noarch dependency of {parent}")

    def closure(self, roots: list[Entry], candidates: list[Entry]) -> dict[str, str]:
        """`subdir/filename` -> the package that first pulled it in, for every dependency
        (direct or indirect) of the roots among the candidates; cycles are fine."""
        index = _index(candidates)
        via: dict[str, str] = {}
        stack = list(roots)
        seen = {e.key for e in roots}
        while stack:
            entry = stack.pop()
            for _spec, match in self.dependencies(entry, index):
                for dependency in match:
                    key = dependency.key
                    if key not in seen:
                        seen.add(key)
                        via[key] = entry.name
                        stack.append(dependency)
        return via

    def dependencies(
        self, entry: Entry, index: Mapping[str, Mapping[str, list[Entry]]]
    ) -> Iterable[tuple[str, list[Entry]]]:
        """Each depends string of the entry with the candidates (same subdir or noarch) that
        satisfy it; virtual packages (`__glibc`) are skipped."""
        for text in entry.depends:
            spec = _spec(text)
            if spec is None or spec.name.normalized.startswith("__"):
                continue
            name = spec.name.normalized
            pool = [*index.get(entry.subdir, {}).get(name, ())]
            if entry.subdir != "noarch":
                pool += index.get("noarch", {}).get(name, ())
            yield text, [c for c in pool if spec.matches(c.rattler)]

    def _drop_legacy(self, entries: list[Entry], decisions: dict[str, Decision]) -> None:
        conda_builds = {
            e.key[: -len(".conda")]
            for e in entries
            if e.filename.endswith(".conda") and decisions[e.key].allowed
        }
        for entry in entries:
            if entry.filename.endswith(".tar.bz2"):
                key = entry.key
                stem = key[: -len(".tar.bz2")]
                if stem in conda_builds and decisions[key].allowed:
                    decisions[key] = Decision(False, "legacy .tar.bz2 (the .conda is mirrored)")


def _index(entries: Iterable[Entry]) -> dict[str, dict[str, list[Entry]]]:
    index: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for entry in entries:
        index[entry.subdir][entry.name].append(entry)
    return index


_SPECS: dict[str, MatchSpec | None] = {}


def _spec(text: str) -> MatchSpec | None:
    """A depends string as a MatchSpec (cached; None if rattler cannot read it)."""
    if text not in _SPECS:
        try:
            _SPECS[text] = MatchSpec(text)
        except Exception:  # an unreadable upstream depends string matches nothing
            _SPECS[text] = None
    return _SPECS[text]


def _affects(affected: dict, version: str) -> bool:
    try:
        return affects(affected, version, _compare_versions)
    except Exception:  # a version rattler cannot read is not judged affected
        return False


def compile_policy(policy, *, today: dt.date | None = None) -> CompiledPolicy:
    """Compile the policy with the current vulnerability data (one query)."""
    from .models import Vulnerability

    advisories: list[Advisory] = []
    if policy.cve_score is not None or policy.cve_statuses_excluded:
        advisories = [
            Advisory(
                v.osv_id if not v.cve_ids else v.cve_ids[0], v.cvss_score, v.status, v.affected
            )
            for v in Vulnerability.objects.only(
                "osv_id", "aliases", "cvss_score", "status", "affected"
            )
        ]
    return CompiledPolicy(policy, advisories, today=today or dt.date.today())

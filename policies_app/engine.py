"""The decision engine: one model for every package type, deciding each file with a reason.

A `Decider` (built per mirror by `mirrors_app.sync.policy.decider_for`) applies the mirror's
filters, then the effective policy compiled for the package type (`CompiledPolicy`). The sync,
the preview/apply, enforcement, the explain view, "test a package" and the dependency report
all ask it. Pure: no database query per package.

Rule kinds combine with AND, values within one kind with OR. Order of a decision (the first
that applies gives the reason; the rule names are what waivers name):

1. a malicious-package advisory (`malicious`) blocks, whatever else the policy says;
2. an exclusion (a package rule) keeps the file, whatever the other rules say;
3. `platform`, `license`, `cve-status`, `cve-score`, `created-after`, `created-before`,
   `cooldown` and `block` rules;
4. with allow rules only matching packages enter (`allow-list`), plus, with "include
   dependencies", their dependency closure (which still had to pass step 3);
5. conda without "legacy packages": a `.tar.bz2` whose build also exists as `.conda` (`legacy`).

A waiver whose package rule matches and which names the advisory (or an alias) or the rule
lets the file past that one violation; the next one still applies. A dry-run policy decides
the same way but lets everything in, with what it would block in `Decision.would_block`
(malicious packages stay blocked while `block_malicious` is on).

Most policies decide a file from that file alone (`CompiledPolicy.decides_alone`): a first
load then decides each file as it reads it (`OneByOne`), with the same decisions. Most files
of a mirror have a name no package rule, waiver or advisory names (`CompiledPolicy.named`):
only the platform, license and date rules can keep those out, and `OneByOne.decide_file`
judges them from the record alone.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels_app.formats.licenses import normalize_license

from .ecosystems import ECOSYSTEMS, Candidate, Ecosystem, Spec, ecosystem_for
from .osv_matching import affects

__all__ = [
    "Advisory",
    "AdvisoryIndex",
    "Candidate",
    "CompiledPolicy",
    "Decider",
    "Decision",
    "RuleOutcome",
    "WaiverRule",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a file may enter, why not (or why it was let in specially), the rule kind and
    advisory behind it, the waivers that let it past rules, and what a dry run would block."""

    allowed: bool
    reason: str = ""
    rule: str = ""
    advisory: str = ""
    waived: str = ""
    would_block: str = ""


#: The rule kinds a decision names (`Decision.rule`), in decision order; a waiver may name one
#: instead of an advisory. Mirror filters decide as `filter`.
RULES = (
    "malicious",
    "platform",
    "license",
    "cve-status",
    "cve-score",
    "created-after",
    "created-before",
    "cooldown",
    "block",
    "allow-list",
    "legacy",
)

ALLOWED = Decision(True)
NOT_LISTED = Decision(False, "not in the allow list", "allow-list")


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule a file breaks: the rule kind, the reason shown, and the advisory's ids."""

    rule: str
    reason: str
    advisory: str = ""
    ids: frozenset[str] = frozenset()


LEGACY = Violation("legacy", "legacy .tar.bz2 (the .conda is mirrored)")


@dataclass(frozen=True)
class Advisory:
    """An advisory as the engine uses it (from the Vulnerability model)."""

    id: str
    score: Decimal | None
    status: str
    affected: list[dict] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    malicious: bool = False

    @property
    def label(self) -> str:
        """The id with its first CVE alias: "GHSA-xxxx (CVE-2024-1234)"."""
        cve = next((a for a in self.aliases if a.startswith("CVE-") and a != self.id), "")
        return f"{self.id} ({cve})" if cve else self.id

    @property
    def ids(self) -> frozenset[str]:
        return frozenset((self.id, *self.aliases))


@dataclass(frozen=True)
class WaiverRule:
    """A waiver ready to match: its package rule, what it waives, by whom, until when, why."""

    spec: Spec
    rule: str  # an advisory id or alias, or a rule kind
    by: str
    until: dt.datetime
    reason: str

    def covers(self, candidate: Candidate, violation: Violation) -> bool:
        return (self.rule == violation.rule or self.rule in violation.ids) and self.spec.matches(
            candidate
        )

    def note(self, violation: Violation) -> str:
        by = f" by {self.by}" if self.by else ""
        return f"{violation.reason}: waived{by} until {self.until:%Y-%m-%d %H:%M} ({self.reason})"


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule's verdict on one file, for explanations: pass, block, waived, would block, or
    not set (the policy has no such rule)."""

    rule: str
    outcome: str
    detail: str = ""


# --- Advisories by ecosystem -----------------------------------------------------------------


class AdvisoryIndex:
    """The advisories that can concern one package type, by the name they give.

    Entries of the type's own OSV ecosystems match by name; for conda, entries of another
    ecosystem (PyPI) match only through the name mapping (conda name -> [(ecosystem, name)]),
    their versions compared by that ecosystem's rules.
    """

    def __init__(
        self,
        ecosystem: Ecosystem,
        advisories: Iterable[Advisory],
        mapping: Mapping[str, list[tuple[str, str]]] | None = None,
    ) -> None:
        self.ecosystem = ecosystem
        self.mapping = mapping or {}
        self.direct: dict[str, list[tuple[Advisory, dict]]] = defaultdict(list)
        self.foreign: dict[tuple[str, str], list[tuple[Advisory, dict]]] = defaultdict(list)
        foreign_kinds = {e for names in self.mapping.values() for e, _ in names}
        for advisory in advisories:
            for affected in advisory.affected:
                osv, name = affected.get("ecosystem", ""), str(affected.get("name", ""))
                if not name:
                    continue
                if osv in ecosystem.osv_ecosystems:
                    self.direct[ecosystem.normalize(name)].append((advisory, affected))
                elif osv in foreign_kinds:
                    self.foreign[(osv, _normalize_in(osv, name))].append((advisory, affected))

    def __bool__(self) -> bool:
        return bool(self.direct or self.foreign)

    def names(self) -> frozenset[str]:
        """The package names `hits` may find advisories for (the others have none)."""
        mapped = (
            name
            for name, others in self.mapping.items()
            if any((osv, _normalize_in(osv, other)) in self.foreign for osv, other in others)
        )
        return frozenset((*self.direct, *mapped))

    def hits(self, candidate: Candidate) -> list[tuple[Advisory, str]]:
        """The advisories affecting the candidate's version, each with how it matched ("" by
        its own name, else the other ecosystem's name it was mapped to)."""
        found = []
        eco = self.ecosystem
        for advisory, affected in self.direct.get(candidate.name, ()):
            if _affects(affected, candidate.version, eco.compare):
                found.append((advisory, ""))
        for osv, name in self.mapping.get(candidate.name, ()):
            entries = self.foreign.get((osv, _normalize_in(osv, name)), ())
            compare = _compare_in(osv, eco)
            for advisory, affected in entries:
                if _affects(affected, candidate.version, compare):
                    found.append((advisory, f"{osv} {name}, by the conda name mapping"))
        return found


def _normalize_in(osv: str, name: str) -> str:
    eco = next((e for e in ECOSYSTEMS.values() if osv in e.osv_ecosystems), None)
    return eco.normalize(name) if eco is not None else name


def _compare_in(osv: str, fallback: Ecosystem) -> Callable[[str, str], int]:
    """The other ecosystem's version order, falling back to the package type's own for a
    version that order cannot read (a conda version that is no PEP 440 one)."""
    eco = next((e for e in ECOSYSTEMS.values() if osv in e.osv_ecosystems), None)
    if eco is None:
        return fallback.compare

    def compare(a: str, b: str) -> int:
        try:
            return eco.compare(a, b)
        except Exception:
            return fallback.compare(a, b)

    return compare


def _affects(affected: dict, version: str, compare) -> bool:
    try:
        return affects(affected, version, compare)
    except Exception:  # a version the ecosystem cannot read is not judged affected
        return False


# --- The compiled policy ---------------------------------------------------------------------

_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_NEGATED = {"<": "≥", "<=": ">", ">": "≤", ">=": "<"}


class _Specs:
    """Package rules indexed by name, so a file is only matched against its own."""

    def __init__(self, ecosystem: Ecosystem, texts: Iterable[str]) -> None:
        self.by_name: dict[str, list[Spec]] = defaultdict(list)
        for text in texts:
            spec = ecosystem.parse_spec(text)
            self.by_name[spec.name].append(spec)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def match(self, candidate: Candidate) -> str | None:
        """The text of the first rule matching the file, or None."""
        for spec in self.by_name.get(candidate.name, ()):
            if spec.matches(candidate):
                return spec.text
        return None


class CompiledPolicy:
    """A policy (or None: only the malicious-package rule) compiled for its package type, with
    the advisories, waivers and date it decides with; build once per decision pass."""

    def __init__(
        self,
        policy,
        advisories: Iterable[Advisory] | AdvisoryIndex = (),
        *,
        today: dt.date,
        ecosystem: Ecosystem | None = None,
        waivers: Iterable[WaiverRule] = (),
        block_malicious: bool = True,
    ) -> None:
        kind = getattr(policy, "package_type", "") or "conda"
        self.ecosystem = eco = ecosystem or ecosystem_for(kind)
        self.policy = policy
        self.today = today
        self.block_malicious = block_malicious
        self.dry_run = policy is not None and policy.mode == "dry_run"
        self.waivers: dict[str, list[WaiverRule]] = defaultdict(list)  # by package name
        for waiver in waivers:
            self.waivers[waiver.spec.name].append(waiver)
        index = (
            advisories if isinstance(advisories, AdvisoryIndex) else AdvisoryIndex(eco, advisories)
        )
        self.advisories = index
        if policy is None:
            self._no_rules()
        else:
            self._rules(policy, eco, today)
        # Asked of every file: answered once (the rules do not change once compiled).
        self._any_advisories = bool(index)
        self._any_exclusions = bool(self.exclusions)
        self._any_block = bool(self.block)
        self._any_platforms = bool(self.platforms_in or self.platforms_out)
        self._any_licenses = bool(self.licenses_in or self.licenses_out)
        self._any_dates = bool(self.after or self.before or self.newest)
        # Files of other names can only break the platform, license and date rules
        # (`_judge_unnamed`), each judged from the record without a candidate.
        self.named = index.names() | frozenset(
            (*self.exclusions.by_name, *self.block.by_name, *self.allow.by_name, *self.waivers)
        )
        self._platform_verdicts: dict[str, Violation | None] = {}
        self._license_verdicts: dict[Hashable, Violation | None] = {}
        # Whether a record's publication day passes every date rule.
        ends = [day for day in (self.before, self.newest) if day]
        self._dates_pass = eco.published_between(
            self.after or dt.date.min, min(ends, default=dt.date.max)
        )

    def _rules(self, policy, eco: Ecosystem, today: dt.date) -> None:
        self.platforms_in = frozenset(policy.platforms_include or ())
        self.platforms_out = frozenset(policy.platforms_exclude or ())
        self.licenses_in = frozenset(normalize_license(v) for v in policy.licenses_include or ())
        self.licenses_out = frozenset(normalize_license(v) for v in policy.licenses_exclude or ())
        self.unknown_license_ok = policy.unknown_license == "allow"
        self.score = Decimal(str(policy.cve_score)) if policy.cve_score is not None else None
        self.comparator = policy.cve_score_comparator
        self.statuses_out = frozenset(policy.cve_statuses_excluded or ())
        self.allow = _Specs(eco, policy.allow_specs or ())
        self.block = _Specs(eco, policy.block_specs or ())
        self.exclusions = _Specs(eco, policy.exclusions or ())
        self.include_dependencies = bool(policy.include_dependencies)
        self.after = policy.created_after
        self.before = policy.created_before
        self.min_age = policy.min_age_days or 0
        self.newest = today - dt.timedelta(days=self.min_age) if self.min_age else None
        self.legacy = bool(policy.legacy_packages) or eco.kind != "conda"

    def _no_rules(self) -> None:
        self.platforms_in = self.platforms_out = self.licenses_in = self.licenses_out = frozenset()
        self.unknown_license_ok, self.score, self.comparator = True, None, "<"
        self.statuses_out = frozenset()
        self.allow = self.block = self.exclusions = _Specs(self.ecosystem, ())
        self.include_dependencies = False
        self.after = self.before = self.newest = None
        self.min_age = 0
        self.legacy = True

    # --- One file, every rule but the allow list --------------------------------------------

    def violations(
        self, candidate: Candidate, *, any_platform: bool = False
    ) -> Iterator[Violation]:
        """Every rule of steps 1 and 3 the file breaks, in order (lazily: the first that is not
        waived decides)."""
        hits = self.advisories.hits(candidate) if self._any_advisories else []
        if hits and self.block_malicious:
            yield from self._advisory_violations(hits, malicious=True)
        eco = self.ecosystem
        if self._any_platforms:
            yield from self._platform_violations(eco.platform(candidate), any_platform)
        if self._any_licenses:
            violation = self._license(eco.licenses(candidate))
            if violation:
                yield violation
        if hits and (self.score is not None or self.statuses_out):
            yield from self._advisory_violations(hits, malicious=False)
        if self._any_dates:
            yield from self._dates(eco.published(candidate), candidate.first_seen)
        if self._any_block:
            spec = self.block.match(candidate)
            if spec:
                yield Violation("block", f"blocked by package rule {spec!r}")

    def _platform_violations(self, platform: str, any_platform: bool) -> Iterator[Violation]:
        if not any_platform and self.platforms_in and platform not in self.platforms_in:
            yield Violation("platform", f"platform {platform} is not included")
        if platform in self.platforms_out:
            yield Violation("platform", f"platform {platform} is excluded")

    def _license(self, found: tuple[str, frozenset[str]] | None) -> Violation | None:
        text, classes = found if found is not None else ("", frozenset())
        if not classes:
            return None if self.unknown_license_ok else Violation("license", "license unknown")
        if self.licenses_in and not classes & self.licenses_in:
            return Violation("license", f"license {text} is not included")
        hit = classes & self.licenses_out
        if hit:
            return Violation("license", f"license {text} is excluded ({', '.join(sorted(hit))})")
        return None

    def _advisory_violations(
        self, hits: list[tuple[Advisory, str]], *, malicious: bool
    ) -> Iterator[Violation]:
        """The malicious-package violations of the advisories affecting a file (`hits`), or
        (not `malicious`) those of the status and score rules."""
        if malicious:
            if self.block_malicious:
                for advisory, via in hits:
                    if advisory.malicious:
                        yield Violation(
                            "malicious",
                            f"malicious package: {advisory.label}{_via(via)}",
                            advisory.id,
                            advisory.ids,
                        )
            return
        hits = [(a, via) for a, via in hits if not a.malicious]
        for advisory, via in hits:
            if advisory.status in self.statuses_out:
                yield Violation(
                    "cve-status",
                    f"{advisory.label} status {advisory.status} is excluded{_via(via)}",
                    advisory.id,
                    advisory.ids,
                )
        if self.score is None:
            return
        scored = sorted(
            (h for h in hits if h[0].score is not None), key=lambda h: h[0].score, reverse=True
        )
        for advisory, via in scored:
            if not _COMPARE[self.comparator](advisory.score, self.score):
                yield Violation(
                    "cve-score",
                    f"{advisory.label} score {advisory.score} "
                    f"{_NEGATED[self.comparator]} {self.score}{_via(via)}",
                    advisory.id,
                    advisory.ids,
                )

    def _dates(self, published: dt.date | None, first_seen: dt.date | None) -> Iterator[Violation]:
        if self.after and published and published < self.after:
            yield Violation("created-after", f"published {published}, before {self.after}")
        if self.before and published and published > self.before:
            yield Violation("created-before", f"published {published}, after {self.before}")
        if self.newest:
            # Without a publication time, the day PSM first saw the file: it is at least
            # that old, so the cooldown never lets a file in early.
            day = published or first_seen
            if day is not None and day > self.newest:
                since = "published" if published else "first seen"
                yield Violation(
                    "cooldown",
                    f"{since} {day}, newer than the {self.min_age}-day cooldown",
                )

    def check(
        self, candidate: Candidate, *, any_platform: bool = False
    ) -> tuple[Violation | None, list[str]]:
        """The first violation no waiver covers (None: the file passes steps 1 and 3), and the
        notes of the waivers that let it past the others."""
        notes: list[str] = []
        for violation in self.violations(candidate, any_platform=any_platform):
            note = self._waived(candidate, violation)
            if note is None:
                return violation, notes
            notes.append(note)
        return None, notes

    def _waived(self, candidate: Candidate, violation: Violation) -> str | None:
        for waiver in self.waivers.get(candidate.name, ()):
            if waiver.covers(candidate, violation):
                return waiver.note(violation)
        return None

    # --- Every file together ----------------------------------------------------------------

    def decide_all(self, candidates: Iterable[Candidate]) -> dict[str, Decision]:
        """Decide every file (keyed by `unit/filename`), closure and legacy rule included."""
        candidates = list(candidates)
        if self.licenses_in or self.licenses_out:
            self.ecosystem.complete(candidates)
        decisions: dict[str, Decision] = {}
        passing: list[Candidate] = []
        shared: dict[Violation, Decision] = {}  # one Decision per violation, when not waived
        judge = self._judge
        for candidate in candidates:
            decision, passes = judge(candidate, shared)
            if decision is not None:
                decisions[candidate.key] = decision
            if passes:
                passing.append(candidate)
        self._allow_list(candidates, passing, decisions)
        if self._admits_noarch:
            self._admit_noarch_dependencies(candidates, decisions)
        if not self.legacy:
            self._drop_legacy(candidates, decisions)
        if self.dry_run:
            for key, decision in decisions.items():
                decisions[key] = self.as_run(decision)
        return decisions

    @property
    def _admits_noarch(self) -> bool:
        return bool(self.platforms_in) and "noarch" not in self.platforms_in

    @property
    def decides_alone(self) -> bool:
        """Whether a file's decision depends on that file alone (`OneByOne`), but for the
        legacy rule (its `.conda` twin): no dependency closure, no noarch dependencies a
        platform rule admits, no license completed from the package's other files."""
        return not (
            (self.allow and self.include_dependencies)
            or self._admits_noarch
            or ((self.licenses_in or self.licenses_out) and self.ecosystem.completes)
        )

    def _judge(
        self, candidate: Candidate, shared: dict[Violation, Decision]
    ) -> tuple[Decision | None, bool]:
        """Steps 1 to 3 and the exclusions: the decision so far (None: none yet) and whether
        the file goes on to the allow list (`shared`: one Decision per unwaived violation)."""
        spec = self.exclusions.match(candidate) if self._any_exclusions else None
        if spec:
            violation, notes = self._malicious_only(candidate)
            if violation is None:
                return Decision(True, f"kept by exclusion {spec!r}", waived="; ".join(notes)), False
        else:
            violation, notes = self.check(candidate)
        if violation is not None:
            if notes:
                return _blocked(violation, "; ".join(notes)), False
            return _shared_block(violation, shared), False
        return (Decision(True, waived="; ".join(notes)) if notes else None), True

    def _judge_unnamed(
        self,
        unit: str,
        record: Mapping[str, Any],
        first_seen: dt.date | None,
        shared: dict[Violation, Decision],
    ) -> Decision | None:
        """`_judge` of a file whose name no package rule, waiver or advisory names (not in
        `named`), from its unit and record: None if it goes on to the allow list, else the
        decision of the first rule it breaks. No waiver can cover it, nor an exclusion keep it,
        so only the platform, license and date rules can: a platform's and a license's verdict
        are each found once, a publication day inside the date rules' bounds passes at once."""
        eco = self.ecosystem
        if self._any_platforms:
            platform = eco.platform_of(unit, record)
            try:
                violation = self._platform_verdicts[platform]
            except KeyError:
                found = self._platform_violations(platform, False)
                violation = self._platform_verdicts[platform] = next(found, None)
            if violation is not None:
                return _shared_block(violation, shared)
        if self._any_licenses:
            fields = eco.license_fields(record)
            try:
                violation = self._license_verdicts[fields]
            except KeyError:
                violation = self._license(eco.licenses_of(fields))
                self._license_verdicts[fields] = violation
            if violation is not None:
                return _shared_block(violation, shared)
        if self._any_dates and not self._dates_pass(record):
            violation = next(self._dates(eco.published_in(record), first_seen), None)
            if violation is not None:
                return _shared_block(violation, shared)
        return None

    def as_run(self, decision: Decision) -> Decision:
        """The decision as the policy's mode applies it: a dry run lets everything in but a
        malicious package, saying what it would block."""
        if not self.dry_run or decision.allowed or decision.rule == "malicious":
            return decision
        return Decision(
            True,
            rule=decision.rule,
            advisory=decision.advisory,
            waived=decision.waived,
            would_block=decision.reason,
        )

    def _malicious_only(self, candidate: Candidate) -> tuple[Violation | None, list[str]]:
        """An exclusion keeps a file past every rule but a malicious-package advisory."""
        notes: list[str] = []
        if self.advisories and self.block_malicious:
            hits = self.advisories.hits(candidate)
            for violation in self._advisory_violations(hits, malicious=True):
                note = self._waived(candidate, violation)
                if note is None:
                    return violation, notes
                notes.append(note)
        return None, notes

    def _allow_list(
        self, candidates: list[Candidate], passing: list[Candidate], decisions: dict
    ) -> None:
        if not self.allow:
            for candidate in passing:
                decisions.setdefault(candidate.key, ALLOWED)
            return
        allowed = [c for c in passing if self.allow.match(c)]
        via = self.closure(allowed, passing) if self.include_dependencies else {}
        allowed_keys = {c.key for c in allowed}
        for candidate in passing:
            key = candidate.key
            if key in allowed_keys:
                decisions.setdefault(key, ALLOWED)
            elif key in via:
                decisions[key] = Decision(True, f"dependency of {via[key]}")
            else:
                decisions[key] = self._not_listed(candidate)

    def _listed_alone(self, candidate: Candidate, decision: Decision | None) -> Decision:
        """`_allow_list` for one passing file (no dependency closure)."""
        if not self.allow or self.allow.match(candidate):
            return decision or ALLOWED
        return self._not_listed(candidate)

    def _not_listed(self, candidate: Candidate) -> Decision:
        violation = Violation("allow-list", NOT_LISTED.reason)
        note = self._waived(candidate, violation)
        return NOT_LISTED if note is None else Decision(True, waived=note)

    def _admit_noarch_dependencies(
        self, candidates: list[Candidate], decisions: dict[str, Decision]
    ) -> None:
        """A platform rule without noarch still brings the noarch packages that the allowed
        platform packages need (they must pass every other rule)."""
        noarch = [
            c
            for c in candidates
            if c.unit == "noarch"
            and not decisions[c.key].allowed
            and self.check(c, any_platform=True)[0] is None
            and (not self.allow or self.allow.match(c) or self.include_dependencies)
        ]
        if not noarch:
            return
        roots = [c for c in candidates if c.unit != "noarch" and decisions[c.key].allowed]
        for key, parent in self.closure(roots, noarch).items():
            if key.startswith("noarch/"):
                decisions[key] = Decision(True, f"noarch dependency of {parent}")

    def closure(self, roots: list[Candidate], candidates: list[Candidate]) -> dict[str, str]:
        """`unit/filename` -> the package that first pulled it in, for every dependency (direct
        or indirect) of the roots among the candidates; cycles are fine."""
        index = self.index(candidates)
        via: dict[str, str] = {}
        stack = list(roots)
        seen = {c.key for c in roots}
        while stack:
            candidate = stack.pop()
            for _text, match in self.ecosystem.dependencies(candidate, index):
                for dependency in match:
                    key = dependency.key
                    if key not in seen:
                        seen.add(key)
                        via[key] = candidate.name
                        stack.append(dependency)
        return via

    def index(self, candidates: Iterable[Candidate]) -> dict[str, dict[str, list[Candidate]]]:
        """Candidates by pool (conda platform) and name, for dependency lookups."""
        index: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
        pool_key = self.ecosystem.pool_key
        for candidate in candidates:
            index[pool_key(candidate)][candidate.name].append(candidate)
        return index

    def dependencies(self, candidate: Candidate, index) -> Iterable[tuple[str, list[Candidate]]]:
        return self.ecosystem.dependencies(candidate, index)

    def _drop_legacy(self, candidates: list[Candidate], decisions: dict[str, Decision]) -> None:
        conda_builds = {
            c.key[: -len(".conda")]
            for c in candidates
            if c.filename.endswith(".conda") and decisions[c.key].allowed
        }
        for candidate in candidates:
            if candidate.filename.endswith(".tar.bz2"):
                key = candidate.key
                if key[: -len(".tar.bz2")] in conda_builds and decisions[key].allowed:
                    decisions[key] = self._legacy(candidate, decisions[key])

    def _legacy(self, candidate: Candidate | None, decision: Decision) -> Decision:
        """An allowed `.tar.bz2` whose `.conda` is mirrored: kept out, unless waived (None: a
        file no waiver names)."""
        note = self._waived(candidate, LEGACY) if candidate is not None else None
        return _blocked(LEGACY) if note is None else decision

    # --- Explanations ------------------------------------------------------------------------

    def explain(self, candidate: Candidate) -> list[RuleOutcome]:
        """Every rule kind's verdict on one file, in decision order."""
        outcomes: list[RuleOutcome] = []
        broken: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.violations(candidate):
            broken[violation.rule].append(violation)
        set_rules = self._set_rules()
        exclusion = self.exclusions.match(candidate) if self.exclusions else None
        # The legacy rule needs the file's `.conda` twin: judged with the mirror's files only.
        for rule in ("malicious", "exclusion", *(r for r in RULES[1:] if r != "legacy")):
            if rule == "exclusion":
                if self.exclusions:
                    detail = f"kept by exclusion {exclusion!r}" if exclusion else "no match"
                    outcomes.append(RuleOutcome(rule, "keep" if exclusion else "pass", detail))
                continue
            if rule == "allow-list":
                if self.allow:
                    spec = self.allow.match(candidate)
                    if spec:
                        outcomes.append(RuleOutcome(rule, "pass", f"allowed by {spec!r}"))
                    else:
                        violation = Violation(rule, NOT_LISTED.reason)
                        outcomes.append(self._outcome(candidate, violation, exclusion))
                else:
                    outcomes.append(RuleOutcome(rule, "not set"))
                continue
            if rule not in set_rules:
                outcomes.append(RuleOutcome(rule, "not set"))
            elif not broken.get(rule):
                outcomes.append(RuleOutcome(rule, "pass", self._pass_detail(rule, candidate)))
            else:
                for violation in broken[rule]:
                    outcomes.append(self._outcome(candidate, violation, exclusion))
        return outcomes

    def _outcome(self, candidate, violation: Violation, exclusion: str | None) -> RuleOutcome:
        note = self._waived(candidate, violation)
        if note is not None:
            return RuleOutcome(violation.rule, "waived", note)
        if exclusion and violation.rule != "malicious":
            return RuleOutcome(violation.rule, "overridden", f"{violation.reason} (exclusion)")
        if self.dry_run and violation.rule != "malicious":
            return RuleOutcome(violation.rule, "would block", violation.reason)
        return RuleOutcome(violation.rule, "block", violation.reason)

    def _set_rules(self) -> set[str]:
        rules = set()
        if self.block_malicious:
            rules.add("malicious")
        if self.platforms_in or self.platforms_out:
            rules.add("platform")
        if self.licenses_in or self.licenses_out:
            rules.add("license")
        if self.statuses_out:
            rules.add("cve-status")
        if self.score is not None:
            rules.add("cve-score")
        if self.after:
            rules.add("created-after")
        if self.before:
            rules.add("created-before")
        if self.newest:
            rules.add("cooldown")
        if self.block:
            rules.add("block")
        return rules

    def _pass_detail(self, rule: str, candidate: Candidate) -> str:
        if rule in ("malicious", "cve-status", "cve-score"):
            hits = [a.label for a, _ in self.advisories.hits(candidate)]
            return f"advisories: {', '.join(hits)}" if hits else "no advisory affects it"
        if rule in ("created-after", "created-before", "cooldown"):
            published = self.ecosystem.published(candidate)
            if published:
                return f"published {published}"
            if rule == "cooldown" and candidate.first_seen:
                return f"first seen {candidate.first_seen}"
            return "no publication time"
        if rule == "license":
            found = self.ecosystem.licenses(candidate)
            return f"license {found[0]}" if found and found[0] else "license unknown"
        if rule == "platform":
            return f"platform {self.ecosystem.platform(candidate)}"
        return ""


def _via(how: str) -> str:
    return f" ({how})" if how else ""


def _blocked(violation: Violation, waived: str = "") -> Decision:
    return Decision(False, violation.reason, violation.rule, violation.advisory, waived)


def _shared_block(violation: Violation, shared: dict[Violation, Decision]) -> Decision:
    """The decision of an unwaived violation, one per violation (`shared`)."""
    decision = shared.get(violation)
    if decision is None:
        decision = shared[violation] = _blocked(violation)
    return decision


# --- One file at a time ----------------------------------------------------------------------


class OneByOne:
    """`CompiledPolicy.decide_all`'s decisions made a file at a time, as files are read, for a
    policy that `decides_alone`. Only the legacy rule looks at another file: an allowed
    `.tar.bz2` is kept out when its `.conda` twin (same unit) is allowed, so a unit's `.conda`
    files must come before its `.tar.bz2` ones (conda's reader yields them so). Should one come
    after, `in_order` turns False: the decisions may be wrong, decide the files together
    (`decide_all`). Call `unit_read` between units."""

    def __init__(self, policy: CompiledPolicy) -> None:
        if not policy.decides_alone:
            raise ValueError("this policy decides some files with others: use decide_all")
        self.policy = policy
        self.in_order = True
        self._shared: dict[Violation, Decision] = {}
        # `unit/stem` of the unit's allowed `.conda` files; whether a `.tar.bz2` came yet.
        self._conda: set[str] = set()
        self._legacy_seen = False
        #: The decision of a file that passes the rules, if the allow list does not name it.
        self._unlisted = NOT_LISTED if policy.allow else ALLOWED

    def decide(self, candidate: Candidate) -> Decision:
        """The file's decision, as `decide_all` would make it among its unit's files."""
        policy = self.policy
        decision, passes = policy._judge(candidate, self._shared)
        if passes:
            decision = policy._listed_alone(candidate, decision)
        assert decision is not None
        return self._legacy_and_mode(decision, candidate.unit, candidate.filename, candidate)

    def decide_file(
        self,
        unit: str,
        filename: str,
        version: str,
        record: Mapping[str, Any],
        first_seen: dt.date | None = None,
    ) -> Decision:
        """`decide` of the candidate the ecosystem makes of these, made only if a rule names
        the file's package (most files of a mirror are judged from their record alone)."""
        policy = self.policy
        name = policy.ecosystem.name_of(unit, record)
        if name in policy.named:
            return self.decide(Candidate(unit, filename, name, version, record, first_seen))
        decision = policy._judge_unnamed(unit, record, first_seen, self._shared)
        if decision is None:
            decision = self._unlisted
        return self._legacy_and_mode(decision, unit, filename, None)

    def _legacy_and_mode(
        self, decision: Decision, unit: str, filename: str, candidate: Candidate | None
    ) -> Decision:
        """The legacy rule and the policy's mode applied to a file's decision (`candidate`:
        None for a file whose name no rule names)."""
        policy = self.policy
        if not policy.legacy:
            if filename.endswith(".conda"):
                if self._legacy_seen:
                    self.in_order = False
                if decision.allowed:
                    self._conda.add(f"{unit}/{filename[:-6]}")  # without ".conda"
            elif filename.endswith(".tar.bz2"):
                self._legacy_seen = True
                if decision.allowed and f"{unit}/{filename[:-8]}" in self._conda:
                    decision = policy._legacy(candidate, decision)
        return policy.as_run(decision) if policy.dry_run else decision

    def unit_read(self) -> None:
        """The unit's files were all decided: forget its `.conda` files."""
        self._conda.clear()
        self._legacy_seen = False


# --- Filters and policy together -------------------------------------------------------------

#: A format's mirror filters: `key` -> exclusion reason ("" enters) for the files given.
Filters = Callable[[list[Candidate]], Mapping[str, str]]


class Decider:
    """The one decision for a mirror's files: its filters, then its effective policy."""

    def __init__(self, policy: CompiledPolicy, filters: Filters | None = None) -> None:
        self.policy = policy
        self.filters = filters

    @property
    def ecosystem(self) -> Ecosystem:
        return self.policy.ecosystem

    @property
    def judges_anything(self) -> bool:
        """False when every file enters whatever it is (no filters, no policy, no malicious
        advisory that could concern the package type)."""
        policy = self.policy
        return (
            self.filters is not None
            or policy.policy is not None
            or bool(policy.advisories and policy.block_malicious)
        )

    def decide_all(self, candidates: Iterable[Candidate]) -> dict[str, Decision]:
        candidates = list(candidates)
        decisions: dict[str, Decision] = {}
        passing = candidates
        if self.filters is not None:
            reasons = self.filters(candidates)
            shared: dict[str, Decision] = {}
            passing = []
            for candidate in candidates:
                reason = reasons.get(candidate.key, "")
                if reason:
                    decision = shared.get(reason) or shared.setdefault(
                        reason, Decision(False, reason, "filter")
                    )
                    decisions[candidate.key] = decision
                else:
                    passing.append(candidate)
        decisions.update(self.policy.decide_all(passing))
        return decisions

    def explain(self, candidate: Candidate) -> tuple[Decision, list[RuleOutcome]]:
        """The decision on one file alone (a dependency closure is judged with the mirror's
        other files, at a sync) and every rule's verdict."""
        decision = self.decide_all([candidate])[candidate.key]
        outcomes = []
        if self.filters is not None:
            reason = decision.reason if decision.rule == "filter" else ""
            outcomes.append(RuleOutcome("filter", "block" if reason else "pass", reason))
            if reason:
                return decision, outcomes
        return decision, outcomes + self.policy.explain(candidate)

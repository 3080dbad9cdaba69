"""Decide a mirror's packages from the database: its filters and effective policy.

Every upstream record stays stored, allowed or not, so a policy change, new advisories or an
expired waiver can be previewed and applied at once, without fetching the upstream index
again. Only rows whose decision changed are written, grouped by reason.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson
from django.db import transaction
from django.db.models import F
from django.db.models.functions import TruncDate
from django.utils import timezone

from channels_app.models import Channel, Package
from channels_app.querysets import has_rows
from channels_app.row_streams import stream_rows
from policies_app.compiling import compile_policy, data_version, malicious_advisories_exist
from policies_app.ecosystems import Candidate, ecosystem_for
from policies_app.engine import Decider, Decision, OneByOne

from ..models import Mirror

BATCH = 5000


@dataclass
class PolicyChange:
    """What applying a policy does (or did): packages entering and leaving, reasons counted."""

    entering: list[str] = field(default_factory=list)
    leaving: list[tuple[str, str]] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    allowed: int = 0
    #: Kept out by this decision: allowed before, new, or kept out before for another reason.
    newly_excluded: Counter[str] = field(default_factory=Counter)
    #: Under a dry-run policy: files the policy would newly keep out (they stay in).
    would_leave: list[tuple[str, str]] = field(default_factory=list)
    would_block: int = 0

    def as_dict(self, limit: int = 1000) -> dict:
        return {
            "allowed": self.allowed,
            "excluded": sum(self.excluded.values()),
            "entering": len(self.entering),
            "leaving": len(self.leaving),
            "entering_packages": self.entering[:limit],
            "leaving_packages": [{"path": p, "reason": r} for p, r in self.leaving[:limit]],
            "excluded_by_reason": dict(self.excluded.most_common()),
            "would_block": self.would_block,
            "would_leave": len(self.would_leave),
            "would_leave_packages": [{"path": p, "reason": r} for p, r in self.would_leave[:limit]],
        }


def decider_for(mirror: Mirror, *, now=None) -> Decider:
    """The one decider of the mirror's files: its format's mirror filters (Python, R), then
    its effective policy (or, without one, the malicious-package rule) for its package type."""
    fmt = mirror.format
    filters = None
    if mirror.options and fmt.capabilities.filters_files:
        options = mirror.options

        def filters(candidates: list[Candidate]) -> dict[str, str]:
            files = ((c.key, c.unit, c.filename, c.version, c.record) for c in candidates)
            return fmt.filter_files(options, files)

    compiled = compile_policy(mirror.effective_policy(), kind=mirror.channel.kind, now=now)
    return Decider(compiled, filters)


def policy_fingerprint(mirror: Mirror) -> str:
    """Changes whenever a run or an enforcement must decide again although no record changed:
    the filters, the policy, or the data it decides with (`data_version`)."""
    policy = mirror.effective_policy()
    parts = [
        "filters:" + orjson.dumps(mirror.options, option=orjson.OPT_SORT_KEYS).decode(),
        f"policy:{policy.pk}@{policy.updated_at.isoformat()}" if policy else "policy:none",
        data_version(policy, mirror.channel.kind),
    ]
    return "|".join(parts)


def packages_decide(
    *, mirror: Mirror, dry_run: bool = False, count_allowed: bool = True
) -> PolicyChange:
    """Decide every package of the mirror (`decider_for`); write the changes unless `dry_run`
    (a preview). `count_allowed=False` (a sync, which reports only what is kept out) leaves
    `allowed` at 0 when nothing is judged, saving a count of every row."""
    decider = decider_for(mirror)
    rows = Package.objects.filter(mirror=mirror, removed=False)
    if not decider.judges_anything:
        return _allow_all(mirror, rows, dry_run, count_allowed)
    # In the table's ordering (unit, name, version, filename), as `decide_rows` needs an order.
    first_seen = _FIRST_SEEN if decider.policy.newest else F("pk")  # pk: a stand-in, ignored
    columns = rows.annotate(first_seen=first_seen).values_list(
        "pk",
        "unit",
        "filename",
        "version",
        "record",
        "excluded_reason",
        "would_exclude_reason",
        "first_seen",
    )
    change, updates = decide_rows(decider, stream_rows(columns))
    if not dry_run and updates:
        now = timezone.now()
        for (reason, would_now), pks in updates.items():
            for start in range(0, len(pks), BATCH):
                with transaction.atomic():
                    Package.objects.filter(pk__in=pks[start : start + BATCH]).update(
                        excluded_reason=reason, would_exclude_reason=would_now, updated_at=now
                    )
                    Channel.objects.filter(pk=mirror.channel_id).update(
                        content_version=F("content_version") + 1
                    )
    return change


#: The day PSM first stored a file (UTC), read only for a cooldown (files without a
#: publication time). A date, not the time: loading 600,000 times costs seconds.
_FIRST_SEEN = TruncDate("added_at", tzinfo=dt.UTC)


def decide_rows(
    decider: Decider, rows: Iterable[tuple]
) -> tuple[PolicyChange, dict[tuple[str, str], list[int]]]:
    """Decide rows of (id, unit, filename, version, record, excluded_reason,
    would_exclude_reason, the day the file was first stored: read only if the policy has a
    cooldown) in the order given (a dependency's "dependency of" names the first package that
    pulled it in); return what changes and the ids to write, by (excluded_reason,
    would_exclude_reason)."""
    with _no_cyclic_gc():
        return _decide_rows(decider, rows)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Hold the cyclic garbage collector while a mirror's files are decided: it would walk the
    hundreds of thousands of candidates held (none in a cycle) again and again as they are
    made, which took half the time of making them. Reference counting frees the rest."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decide_rows(
    decider: Decider, rows: Iterable[tuple]
) -> tuple[PolicyChange, dict[tuple[str, str], list[int]]]:
    ecosystem = decider.ecosystem
    seen = decider.policy.newest
    current: dict[str, tuple[int, str, str]] = {}
    candidates: list[Candidate] = []
    shared: dict = {}  # values many records repeat, held once (see `Ecosystem.compact`)
    for pk, unit, filename, version, record, excluded, would, first_seen in rows:
        document = ecosystem.compact(orjson.loads(record), shared) if record else {}
        if not seen:
            first_seen = None
        candidate = ecosystem.candidate(unit, filename, version, document, first_seen=first_seen)
        current[candidate.key] = (pk, excluded, would)
        candidates.append(candidate)
    del shared
    decisions = decider.decide_all(candidates)
    del candidates
    change = PolicyChange()
    updates: dict[tuple[str, str], list[int]] = {}
    for key, (pk, excluded, would) in current.items():
        decision = decisions.get(key) or _ALLOWED
        reason = "" if decision.allowed else decision.reason[:300]
        would_now = decision.would_block[:300]
        if reason:
            change.excluded[reason] += 1
        else:
            change.allowed += 1
        if would_now:
            change.would_block += 1
        if reason == excluded and would_now == would:
            continue
        updates.setdefault((reason, would_now), []).append(pk)
        if reason != excluded:
            if not reason:
                change.entering.append(key)
            elif not excluded:
                change.leaving.append((key, reason))
            if reason:
                change.newly_excluded[reason] += 1
        if would_now and would_now != would:
            change.would_leave.append((key, would_now))
    return change, updates


_ALLOWED = Decision(True)


def _allow_all(mirror: Mirror, rows, dry_run: bool, count_allowed: bool) -> PolicyChange:
    """Nothing to judge: everything enters. The marked rows (kept out, or a dry run's
    verdict) are found through their partial index, so a mirror without any costs an index
    probe, whatever its size."""
    change = PolicyChange(allowed=rows.count() if count_allowed else 0)
    marked = rows.exclude(excluded_reason="", would_exclude_reason="")
    # Along the partial index, even before the table's first ANALYZE (right after a first
    # sync's 2,000,000 rows), where the planner would read every row of the mirror instead
    # (5 s at PyPI scale).
    if not has_rows(marked, "excluded_reason"):
        return change
    change.entering = [
        f"{u}/{f}"
        for u, f in marked.exclude(excluded_reason="").values_list("unit", "filename")[:1000]
    ]
    if not dry_run and has_rows(marked, "excluded_reason"):
        with transaction.atomic():
            marked.update(excluded_reason="", would_exclude_reason="", updated_at=timezone.now())
            Channel.objects.filter(pk=mirror.channel_id).update(
                content_version=F("content_version") + 1
            )
    return change


class RowDecisions:
    """A first load's rows decided as they are read, when the mirror's decision on a file
    depends on that file alone (`CompiledPolicy.decides_alone`; else the run stages its rows,
    see `first_load`): each row enters the package table once, with its decision, as rows
    without anything to decide do. The decisions are `packages_decide`'s.

    `first_seen` is the UTC day of the time a row will be written with (its `added_at`, which a
    cooldown reads)."""

    def __init__(self, decider: Decider, fingerprint: str) -> None:
        self.one = OneByOne(decider.policy)
        #: The mirror's `policy_fingerprint` as of the decider's compiling.
        self.fingerprint = fingerprint
        self._cooldown = decider.policy.newest is not None

    @classmethod
    def for_mirror(cls, mirror: Mirror) -> RowDecisions | None:
        """The mirror's row decisions; None if a file's decision depends on other files."""
        fingerprint = policy_fingerprint(mirror)  # first: data changing meanwhile is seen
        decider = decider_for(mirror)
        if decider.filters is not None or not decider.policy.decides_alone:
            return None
        return cls(decider, fingerprint)

    @property
    def complete(self) -> bool:
        """Whether every decision holds (False: a unit's files came out of order, see
        `OneByOne`; `packages_decide` must decide them again)."""
        return self.one.in_order

    def decide(
        self,
        unit: str,
        filename: str,
        version: str,
        record: str,
        first_seen: dt.date,
        parsed: Mapping | None = None,
    ) -> tuple[str, str]:
        """A file's `excluded_reason` and `would_exclude_reason`, as `_decide_rows` writes
        them; `parsed`: its record as read (the dict whose JSON `record` is, as every format's
        `PackageRecord.extra` is), else parsed here."""
        if not record:
            document: Mapping = {}
        elif parsed is not None:
            document = parsed
        else:
            document = orjson.loads(record)
        # Not `Ecosystem.compact`: that only saves memory where many are held, and the engine
        # reads the same keys either way.
        decision = self.one.decide_file(
            unit, filename, version, document, first_seen if self._cooldown else None
        )
        reason = "" if decision.allowed else decision.reason[:300]
        return reason, decision.would_block[:300]

    def unit_read(self) -> None:
        self.one.unit_read()


def decides_anything(mirror: Mirror) -> bool:
    """Whether the mirror's new files wait for a decision before they may be served (the
    question `Decider.judges_anything` answers, without loading advisories)."""
    if mirror.options and mirror.format.capabilities.filters_files:
        return True
    return mirror.effective_policy() is not None or malicious_advisories_exist()


# --- "Test a package" ----------------------------------------------------------------------


def test_package(*, channel: Channel, name: str, version: str = "", platform: str = "") -> dict:
    """What each mirror of the channel (or, without mirrors, the channel's policy) decides
    about a package, whether or not upstream has it yet: every stored file of that name (and
    version) with its decision, else a hypothetical file, with every rule's verdict."""
    ecosystem = ecosystem_for(channel.kind)
    normalized = ecosystem.normalize(name.strip())
    mirrors = list(channel.mirrors.select_related("policy", "channel__policy").order_by("name"))
    results = []
    for mirror in mirrors or [None]:
        if mirror is not None:
            decider = decider_for(mirror)
            policy = mirror.effective_policy()
        else:
            policy = channel.policy
            decider = Decider(compile_policy(policy, kind=channel.kind))
        files = [
            _judged(decider, candidate, known=True)
            for candidate in _stored(channel, mirror, ecosystem, normalized, version, platform)
        ]
        if not files:
            hypothetical = _hypothetical(ecosystem, normalized, version, platform)
            files = [_judged(decider, hypothetical, known=False)]
        results.append(
            {
                "mirror": mirror.name if mirror is not None else None,
                "policy": policy.name if policy is not None else None,
                "mode": policy.mode if policy is not None else None,
                "files": files,
            }
        )
    return {
        "channel": channel.path,
        "name": name,
        "version": version,
        "platform": platform,
        "results": results,
    }


def _stored(channel, mirror, ecosystem, name: str, version: str, platform: str):
    rows = Package.objects.filter(channel=channel, removed=False)
    rows = rows.filter(mirror=mirror) if mirror is not None else rows.filter(mirror__isnull=True)
    rows = rows.filter(name__iexact=name) if ecosystem.kind != "cran" else rows.filter(name=name)
    if version:
        rows = rows.filter(version=version)
    if platform:
        rows = rows.filter(unit=platform)
    for unit, filename, found_version, record, added in rows.order_by(
        "unit", "filename"
    ).values_list("unit", "filename", "version", "record", "added_at")[:200]:
        yield ecosystem.candidate(
            unit,
            filename,
            found_version,
            orjson.loads(record) if record else {},
            first_seen=added.date() if added else None,
        )


def _hypothetical(ecosystem, name: str, version: str, platform: str) -> Candidate:
    """A file upstream may not have yet: only its name, version (and conda platform)."""
    today = timezone.localdate()  # PSM would first see it today: the cooldown counts from it
    if ecosystem.kind == "conda":
        unit = platform or "noarch"
        record = {"name": name, "version": version or "0", "build": "0", "subdir": unit}
        filename = f"{name}-{version or '0'}-0.conda"
        return ecosystem.candidate(unit, filename, version, record, first_seen=today)
    if ecosystem.kind == "pypi":
        filename = f"{name}-{version}.tar.gz"
        return ecosystem.candidate(name, filename, version, {}, first_seen=today)
    record = {"Package": name, "Version": version}
    filename = f"{name}_{version}.tar.gz"
    return ecosystem.candidate("src/contrib", filename, version, record, first_seen=today)


def _judged(decider: Decider, candidate: Candidate, *, known: bool) -> dict:
    decision, outcomes = decider.explain(candidate)
    return {
        "path": candidate.key,
        "version": candidate.version,
        "known": known,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "rule": decision.rule,
        "advisory": decision.advisory,
        "waived": decision.waived,
        "would_block": decision.would_block,
        "rules": [{"rule": o.rule, "outcome": o.outcome, "detail": o.detail} for o in outcomes],
    }

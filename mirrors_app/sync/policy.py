"""Apply a mirror's effective policy to every package it brought, from the database.

Every upstream record stays stored, allowed or not, so a policy change can be previewed and
applied at once, without fetching the upstream index again. Only rows whose decision changed
are written, grouped by reason.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import orjson
from django.db import transaction
from django.db.models import Count, F, Max
from django.utils import timezone

from channels_app.models import Channel, Package
from policies_app.engine import Entry, compile_policy
from policies_app.models import Vulnerability

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

    def as_dict(self, limit: int = 1000) -> dict:
        return {
            "allowed": self.allowed,
            "excluded": sum(self.excluded.values()),
            "entering": len(self.entering),
            "leaving": len(self.leaving),
            "entering_packages": self.entering[:limit],
            "leaving_packages": [{"path": p, "reason": r} for p, r in self.leaving[:limit]],
            "excluded_by_reason": dict(self.excluded.most_common()),
        }


def policy_fingerprint(mirror: Mirror) -> str:
    """Changes whenever a run must decide again although no record changed."""
    if mirror.format.filter_files(mirror.options, ()) is not None:
        return "filters:" + orjson.dumps(mirror.options, option=orjson.OPT_SORT_KEYS).decode()
    policy = mirror.effective_policy()
    if policy is None:
        return "none"
    parts = [str(policy.pk), policy.updated_at.isoformat()]
    if policy.cve_score is not None or policy.cve_statuses_excluded:
        data = Vulnerability.objects.aggregate(n=Count("pk"), at=Max("loaded_at"))
        parts.append(f"{data['n']}@{data['at']}")
    if policy.min_age_days:
        parts.append(dt.date.today().isoformat())  # the cooldown moves every day
    return ":".join(parts)


def packages_decide(*, mirror: Mirror, dry_run: bool = False) -> PolicyChange:
    """Decide every package of the mirror under its mirror filters (Python) or its effective
    policy (conda); write the changes unless `dry_run` (a preview)."""
    fmt = mirror.format
    filtered = fmt.filter_files(mirror.options, ()) is not None
    policy = None if filtered else mirror.effective_policy()
    rows = Package.objects.filter(mirror=mirror, removed=False)
    if (policy is None and not filtered) or (filtered and not mirror.options):
        return _allow_all(mirror, rows, dry_run)
    current: dict[str, tuple[int, str]] = {}
    entries: list[Entry] = []
    files: list[tuple] = []
    for pk, unit, filename, version, record, excluded in rows.values_list(
        "pk", "unit", "filename", "version", "record", "excluded_reason"
    ).iterator(10_000):
        key = f"{unit}/{filename}"
        current[key] = (pk, excluded)
        document = orjson.loads(record) if record else {}
        if filtered:
            files.append((key, unit, filename, version, document))
        elif policy is not None:
            entries.append(Entry(filename, document, unit))
    if filtered:
        decisions = fmt.filter_files(mirror.options, files)
    elif policy is None:
        decisions = {key: "" for key in current}
    else:
        compiled = compile_policy(policy)
        decisions = {
            key: "" if d.allowed else d.reason for key, d in compiled.decide_all(entries).items()
        }
    change = PolicyChange()
    updates: dict[str, list[int]] = {}
    for key, (pk, excluded) in current.items():
        reason = decisions.get(key, "")
        if reason:
            change.excluded[reason] += 1
        else:
            change.allowed += 1
        if reason == excluded:
            continue
        updates.setdefault(reason, []).append(pk)
        if not reason:
            change.entering.append(key)
        elif not excluded:
            change.leaving.append((key, reason))
        if reason:
            change.newly_excluded[reason] += 1
    if not dry_run and updates:
        now = timezone.now()
        for reason, pks in updates.items():
            for start in range(0, len(pks), BATCH):
                with transaction.atomic():
                    Package.objects.filter(pk__in=pks[start : start + BATCH]).update(
                        excluded_reason=reason[:300], updated_at=now
                    )
                    Channel.objects.filter(pk=mirror.channel_id).update(
                        content_version=F("content_version") + 1
                    )
    return change


def _allow_all(mirror: Mirror, rows, dry_run: bool) -> PolicyChange:
    """No rules: everything enters (one query, whatever the mirror's size)."""
    change = PolicyChange(allowed=rows.count())
    excluded = rows.exclude(excluded_reason="")
    change.entering = [f"{s}/{f}" for s, f in excluded.values_list("unit", "filename")[:1000]]
    if not dry_run and change.entering:
        with transaction.atomic():
            excluded.update(excluded_reason="", updated_at=timezone.now())
            Channel.objects.filter(pk=mirror.channel_id).update(
                content_version=F("content_version") + 1
            )
    return change

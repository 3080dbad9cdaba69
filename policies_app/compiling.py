"""A policy compiled with the data it decides with: the queries of one decision pass.

The advisories of the package type's ecosystems (for conda also those the name mapping leads
to), the conda→PyPI name mapping, the policy's active waivers and today's date. `data_version`
says when any of these changed, so a mirror is decided again only then (`policy_fingerprint`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from .ecosystems import ecosystem_for
from .engine import Advisory, AdvisoryIndex, CompiledPolicy, WaiverRule
from .models import NameMapping, Policy, Vulnerability, Waiver


def compile_policy(
    policy: Policy | None, *, kind: str | None = None, now: dt.datetime | None = None
) -> CompiledPolicy:
    """`policy` (None: only the malicious-package rule) ready to decide packages of `kind`
    (default: the policy's package type)."""
    now = now or timezone.now()
    kind = kind or (policy.package_type if policy is not None else "conda")
    ecosystem = ecosystem_for(kind)
    block_malicious = settings.PSM_BLOCK_MALICIOUS
    wants_scores = policy is not None and (
        policy.cve_score is not None or bool(policy.cve_statuses_excluded)
    )
    mapping = _mapping() if kind == "conda" and (wants_scores or block_malicious) else {}
    advisories: list[Advisory] = []
    if wants_scores or block_malicious:
        ecosystems = set(ecosystem.osv_ecosystems) | {e for v in mapping.values() for e, _ in v}
        rows = Vulnerability.objects.filter(_in_ecosystems(ecosystems))
        if not wants_scores:
            rows = rows.filter(malicious=True)
        advisories = [
            Advisory(v.osv_id, v.cvss_score, v.status, v.affected, tuple(v.aliases), v.malicious)
            for v in rows.only("osv_id", "aliases", "cvss_score", "status", "affected", "malicious")
        ]
    waivers = []
    if policy is not None and policy.pk:
        for waiver in active_waivers(policy, now):
            waivers.append(
                WaiverRule(
                    ecosystem.parse_spec(waiver.spec),
                    waiver.rule,
                    waiver.created_by_name,
                    waiver.expires_at,
                    waiver.reason,
                )
            )
    return CompiledPolicy(
        policy,
        AdvisoryIndex(ecosystem, advisories, mapping),
        today=timezone.localdate(now),
        ecosystem=ecosystem,
        waivers=waivers,
        block_malicious=block_malicious,
    )


def malicious_advisories_exist() -> bool:
    """Whether the malicious-package rule could block anything at all."""
    return settings.PSM_BLOCK_MALICIOUS and Vulnerability.objects.filter(malicious=True).exists()


def active_waivers(policy: Policy, now: dt.datetime | None = None):
    return Waiver.objects.filter(policy=policy, expires_at__gt=now or timezone.now()).order_by("pk")


def _in_ecosystems(ecosystems: set[str]) -> Q:
    query = Q(pk__in=[])
    for name in ecosystems:
        query |= Q(ecosystems__contains=f"|{name}|")
    return query


def _mapping() -> dict[str, list[tuple[str, str]]]:
    mapping: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for conda_name, ecosystem, name in NameMapping.objects.values_list(
        "conda_name", "ecosystem", "name"
    ).iterator(10_000):
        mapping[conda_name.lower()].append((ecosystem, name))
    return dict(mapping)


def data_version(policy: Policy | None, kind: str, now: dt.datetime | None = None) -> str:
    """Changes whenever a decision under `policy` for `kind` may change with nothing else
    changed: advisories or the mapping loaded, a waiver added, changed or expired, the day
    (with a cooldown), the malicious-package setting."""
    now = now or timezone.now()
    parts = [f"malicious={int(settings.PSM_BLOCK_MALICIOUS)}"]
    scores = policy is not None and (
        policy.cve_score is not None or bool(policy.cve_statuses_excluded)
    )
    if scores or settings.PSM_BLOCK_MALICIOUS:
        data = Vulnerability.objects.aggregate(n=Count("pk"), at=Max("loaded_at"))
        parts.append(f"advisories={data['n']}@{data['at']}")
        if kind == "conda":
            data = NameMapping.objects.aggregate(n=Count("pk"), at=Max("loaded_at"))
            parts.append(f"mapping={data['n']}@{data['at']}")
    if policy is not None:
        if policy.min_age_days:
            parts.append(f"day={timezone.localdate(now).isoformat()}")  # the cooldown moves
        waivers = active_waivers(policy, now).values_list("pk", "spec", "rule", "expires_at")
        digest = hashlib.blake2b(repr(list(waivers)).encode(), digest_size=8).hexdigest()
        parts.append(f"waivers={digest}")
    return ";".join(parts)

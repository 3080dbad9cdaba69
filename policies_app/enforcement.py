"""Continuous enforcement: decide again, without fetching upstream, whenever what a decision
depends on changes (advisories, the name mapping, a policy, a waiver, the date)."""

from __future__ import annotations

from django.db import transaction


def request_enforcement(*, trigger: str, policy=None) -> None:
    """Queue a re-decision of the mirrors `policy` governs (every mirror when None) once the
    current transaction commits; `trigger` says why, in the records."""
    from .tasks import enforce

    policy_id = policy.pk if policy is not None else None
    transaction.on_commit(lambda: enforce.delay(trigger=trigger, policy_id=policy_id))

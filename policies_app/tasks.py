"""Celery tasks: thin, explicitly named wrappers that call services."""

from __future__ import annotations

from pathlib import Path

from celery import shared_task
from django.conf import settings

from . import enforcement, services


@shared_task(name="policies.load_vulnerabilities")
def load_vulnerabilities() -> str | None:
    """Load the OSV advisories in PSM_VULNERABILITY_DIR; nothing when it is not set."""
    directory = getattr(settings, "PSM_VULNERABILITY_DIR", "")
    if not directory:
        return None
    return str(services.vulnerabilities_load(path=Path(directory)))


@shared_task(name="policies.enforce")
def enforce(
    *, trigger: str, policy_id: int | None = None, mirror_ids: list[int] | None = None
) -> str:
    """Re-decide the mirrors a change affects (see `enforcement.enforce`)."""
    records = enforcement.enforce(trigger=trigger, policy_id=policy_id, mirror_ids=mirror_ids)
    return f"{len(records)} mirror(s) changed"


@shared_task(name="policies.enforce_due")
def enforce_due() -> str:
    """Hourly: re-decide every mirror whose decisions changed with time alone (a cooldown
    ended, a waiver expired); the others cost one fingerprint comparison."""
    records = enforcement.enforce(trigger=enforcement.SCHEDULED)
    return f"{len(records)} mirror(s) changed"

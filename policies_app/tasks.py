"""Celery tasks: thin, explicitly named wrappers that call services."""

from __future__ import annotations

from pathlib import Path

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(name="policies.load_vulnerabilities")
def load_vulnerabilities() -> str | None:
    """Load the OSV advisories in PSM_VULNERABILITY_DIR; nothing when it is not set."""
    directory = getattr(settings, "PSM_VULNERABILITY_DIR", "")
    if not directory:
        return None
    return str(services.vulnerabilities_load(path=Path(directory)))


@shared_task(name="policies.enforce")
def enforce(*, trigger: str, policy_id: int | None = None) -> None:
    """Re-decide the mirrors a change affects (see `enforcement`)."""
    return None  # filled in by the enforcement service

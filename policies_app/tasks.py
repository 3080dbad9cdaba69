"""Celery tasks: thin, explicitly named wrappers that call services."""

from __future__ import annotations

import logging
from pathlib import Path

from celery import shared_task
from django.conf import settings

from . import enforcement, services
from .mapping import MappingError

logger = logging.getLogger(__name__)


@shared_task(name="policies.load_vulnerabilities")
def load_vulnerabilities() -> str | None:
    """Load the OSV advisories in PSM_VULNERABILITY_DIR; nothing when it is not set."""
    directory = getattr(settings, "PSM_VULNERABILITY_DIR", "")
    if not directory:
        return None
    return str(services.vulnerabilities_load(path=Path(directory)))


@shared_task(name="policies.load_name_mapping")
def load_name_mapping() -> str | None:
    """Reload the conda → PyPI name mapping from PSM_NAME_MAPPING_FILE; nothing when unset."""
    path = getattr(settings, "PSM_NAME_MAPPING_FILE", "")
    if not path:
        return None
    try:
        return str(services.name_mapping_load(path=Path(path)))
    except MappingError as exc:
        logger.error("PSM_NAME_MAPPING_FILE: %s", exc)  # the stored mapping stays as it was
        return f"error: {exc}"


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

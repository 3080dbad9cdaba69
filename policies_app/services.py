"""Policy operations shared by the admin, the API, management commands and tasks."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from psm.audit import audit_record

from . import mapping, osv
from .enforcement import request_enforcement
from .models import NameMapping, Policy, Vulnerability, Waiver

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


#: Policy fields that decide nothing: changing them needs no enforcement.
NOT_RULES = frozenset({"name", "description"})


@transaction.atomic
def policy_save(*, policy: Policy, user=None) -> Policy:
    """Save a validated policy and record who created or changed it (and which fields)."""
    created = policy.pk is None
    changed: list[str] = []
    if not created:
        before = Policy.objects.filter(pk=policy.pk).values().first() or {}
        changed = sorted(
            name
            for name, value in before.items()
            if name not in ("updated_at", "created_at") and getattr(policy, name, value) != value
        )
    policy.save()
    action = "policy.create" if created else "policy.change"
    audit_record(actor=user, action=action, target=policy, fields=changed)
    rules = [name for name in changed if name not in NOT_RULES]
    if rules:
        trigger = f"policy {policy.name!r} changed ({', '.join(rules)})"
        request_enforcement(trigger=trigger, policy=policy, user=user)
    return policy


@transaction.atomic
def policy_delete(*, policy: Policy, user=None) -> None:
    """Delete the policy (ProtectedError while a channel or mirror uses it), recorded."""
    audit_record(actor=user, action="policy.delete", target=policy)
    policy.delete()


# --- Waivers ----------------------------------------------------------------------------------


def _waiver_values(waiver: Waiver) -> dict:
    return {
        "policy": waiver.policy_id,
        "spec": waiver.spec,
        "rule": waiver.rule,
        "reason": waiver.reason,
        "expires_at": waiver.expires_at,
    }


def _waiver_details(waiver: Waiver) -> dict:
    return {
        "policy": waiver.policy.name,
        "spec": waiver.spec,
        "rule": waiver.rule,
        "reason": waiver.reason,
        "expires_at": waiver.expires_at.isoformat(),
    }


@transaction.atomic
def waiver_save(*, waiver: Waiver, user=None) -> Waiver:
    """Save a validated waiver, record who created or changed it (and what), and decide its
    policy's mirrors again (both policies' when it moved)."""
    created = waiver.pk is None
    before = None if created else Waiver.objects.select_related("policy").get(pk=waiver.pk)
    changed = []
    if before is not None:
        was = _waiver_values(before)
        changed = [name for name, value in _waiver_values(waiver).items() if was[name] != value]
    if not created and not changed:
        return waiver
    if created and user is not None and user.is_authenticated:
        waiver.created_by, waiver.created_by_name = user, user.get_username()
    waiver.save()
    action = "waiver.create" if created else "waiver.change"
    audit_record(
        actor=user, action=action, target=waiver, fields=changed, **_waiver_details(waiver)
    )
    trigger = f"waiver {'created' if created else 'changed'}: {waiver} (policy {waiver.policy})"
    request_enforcement(trigger=trigger, policy=waiver.policy)
    if before is not None and before.policy_id != waiver.policy_id:
        request_enforcement(trigger=trigger, policy=before.policy)
    return waiver


@transaction.atomic
def waiver_delete(*, waiver: Waiver, user=None) -> None:
    """Delete the waiver, recorded; its policy's mirrors are decided again without it."""
    audit_record(actor=user, action="waiver.delete", target=waiver, **_waiver_details(waiver))
    policy = waiver.policy
    trigger = f"waiver deleted: {waiver} (policy {policy})"
    waiver.delete()
    request_enforcement(trigger=trigger, policy=policy)


# --- The conda → PyPI name mapping -------------------------------------------------------------


@dataclass
class MappingLoadResult:
    """What loading a name mapping file did: rows created, deleted, kept, and the problems."""

    created: int = 0
    deleted: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.deleted)

    def __str__(self) -> str:
        errors = len(self.errors)
        return (
            f"{self.created} created, {self.deleted} deleted, {self.unchanged} unchanged, "
            f"{errors} error{'' if errors == 1 else 's'}"
        )


def name_mapping_load(*, path: Path) -> MappingLoadResult:
    """Replace the name mapping loaded from `path` with what the file holds now.

    Rows loaded from the same file that it no longer lists are deleted, except those of
    entries it could not read (reported in `errors`). A file that cannot be read at all raises
    `mapping.MappingError` and changes nothing. A pair two files list stays the one's that
    loaded it first (and leaves with it until the other is loaded again). Anything changed:
    the mirrors are decided again.
    """
    source = str(Path(path).absolute())
    parsed = mapping.read_mapping(Path(path))
    result = MappingLoadResult(errors=parsed.errors)
    with transaction.atomic():
        stored = {
            (conda_name, ecosystem, name): (pk, row_source)
            for pk, conda_name, ecosystem, name, row_source in NameMapping.objects.values_list(
                "pk", "conda_name", "ecosystem", "name", "source"
            ).iterator(BATCH_SIZE * 10)
        }
        new = [
            NameMapping(conda_name=e.conda_name, ecosystem=e.ecosystem, name=e.name, source=source)
            for e in parsed.entries
            if (e.conda_name, e.ecosystem, e.name) not in stored
        ]
        wanted = {(e.conda_name, e.ecosystem, e.name) for e in parsed.entries}
        gone = [
            pk
            for key, (pk, row_source) in stored.items()
            if row_source == source and key not in wanted and key[0] not in parsed.failed
        ]
        for start in range(0, len(gone), BATCH_SIZE):
            NameMapping.objects.filter(pk__in=gone[start : start + BATCH_SIZE]).delete()
        NameMapping.objects.bulk_create(new, batch_size=BATCH_SIZE, ignore_conflicts=True)
        result.created, result.deleted = len(new), len(gone)
        result.unchanged = len(parsed.entries) - len(new)
        if result.changed:
            request_enforcement(trigger=f"name mapping loaded from {source} ({result})")
    logger.info("Loaded the name mapping from %s: %s", source, result)
    return result


# --- Advisories --------------------------------------------------------------------------------

_FIELDS = [f.name for f in dataclasses.fields(osv.Advisory) if f.name != "osv_id"]


@dataclass
class LoadResult:
    """What a load did: advisories created, updated, left as they were, and the problems."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Advisories read successfully, whatever was done with them."""
        return self.created + self.updated + self.unchanged

    def __str__(self) -> str:
        errors = len(self.errors)
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{errors} error{'' if errors == 1 else 's'}"
        )


def vulnerabilities_load(*, path: Path, force: bool = False) -> LoadResult:
    """Upsert the advisories found at `path` (a .json file, a .zip, or a directory of both).

    An advisory already stored with the same or a later `modified` time is left alone (the
    later one is authoritative in OSV), unless `force`. Unreadable advisories are reported in
    `errors`; the others still load. Batches of BATCH_SIZE, each in its own transaction. When
    any advisory was created or updated, enforcement is queued.
    """
    result = LoadResult()
    batch: dict[str, osv.Advisory] = {}
    for item in osv.iter_advisories(Path(path)):
        if isinstance(item, osv.OSVError):
            result.errors.append(str(item))
            continue
        previous = batch.get(item.osv_id)
        if previous is not None:
            result.unchanged += 1  # a duplicate within the batch: only the later one is written
            if not _newer(item, previous):
                continue
        batch[item.osv_id] = item
        if len(batch) >= BATCH_SIZE:
            _upsert(batch.values(), result, force=force)
            batch = {}
    if batch:
        _upsert(batch.values(), result, force=force)
    logger.info("Loaded vulnerabilities from %s: %s", path, result)
    if result.created or result.updated:
        # Decisions under CVE rules depend on the advisories: every such mirror, within minutes.
        request_enforcement(trigger=f"advisories loaded ({result})")
    return result


def _newer(advisory: osv.Advisory, than: osv.Advisory) -> bool:
    """Whether `advisory` should replace `than` (no modified time counts as newer)."""
    if advisory.modified_at is None or than.modified_at is None:
        return True
    return advisory.modified_at > than.modified_at


def _upsert(advisories: Iterable[osv.Advisory], result: LoadResult, *, force: bool) -> None:
    advisories = list(advisories)
    with transaction.atomic():
        stored = dict(
            Vulnerability.objects.filter(osv_id__in=[a.osv_id for a in advisories]).values_list(
                "osv_id", "modified_at"
            )
        )
        changed = []
        for advisory in advisories:
            if advisory.osv_id not in stored:
                result.created += 1
            elif force or advisory.modified_at is None or stored[advisory.osv_id] is None:
                result.updated += 1
            elif advisory.modified_at > stored[advisory.osv_id]:
                result.updated += 1
            else:
                result.unchanged += 1
                continue
            changed.append(Vulnerability(**dataclasses.asdict(advisory)))
        if changed:
            Vulnerability.objects.bulk_create(
                changed,
                update_conflicts=True,
                unique_fields=["osv_id"],
                update_fields=[*_FIELDS, "loaded_at"],
            )

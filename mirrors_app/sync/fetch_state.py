"""What a run keeps for the next one, so that it asks upstream only about what changed.

Each unit read to the end keeps its validators (ETag, Last-Modified) and the serial the
listing gave it (`MirrorUnit`); the listing documents keep theirs in
`Mirror.listing_validators`, valid only while the units kept are that listing's.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import orjson
from django.db import IntegrityError, transaction

from ..models import Mirror, MirrorUnit


class UnitState(NamedTuple):
    """What the last run that read a unit to the end kept of it."""

    validators: dict
    serial: int | None


def _documents_key(mirror: Mirror, units: int) -> str:
    """What kept listing documents stand for: the mirror's options (a CRAN package list makes
    another listing of the same PACKAGES) and how many units that listing has."""
    options = orjson.dumps([mirror.options, units], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(options, digest_size=8).hexdigest()


def kept_documents(mirror: Mirror, units: int) -> dict:
    """The validators of the source's listing documents (see `RepositoryFormat.list_units`)
    kept by the last run that read every unit, if it had the same options and its units are
    still the `units` kept (none was forgotten since)."""
    kept = mirror.listing_validators
    if kept.get("key") != _documents_key(mirror, units):
        return {}
    return dict(kept.get("documents") or {})


def keep_documents(mirror: Mirror, documents: dict, stale: list[str], units: int) -> None:
    """Keep the listing documents' validators for the next run, and with them only the units
    of that listing (`units` of them): a 304 lists the units kept."""
    kept: dict = {}
    if documents:
        for start in range(0, len(stale), 1000):
            MirrorUnit.objects.filter(mirror=mirror, name__in=stale[start : start + 1000]).delete()
        kept = {"key": _documents_key(mirror, units), "documents": documents}
    if kept != mirror.listing_validators:
        mirror.listing_validators = kept
        Mirror.objects.filter(pk=mirror.pk).update(listing_validators=kept)


def unit_states(units_read, todo: list, serials: dict) -> list:
    """(unit, UnitState or None, serial) for the units to fetch: the validators of those read
    before, loaded for these units only."""
    validators: dict[str, dict] = {}
    before = [unit for unit, _ in todo if unit in serials]
    for start in range(0, len(before), 1000):
        chunk = before[start : start + 1000]
        validators.update(units_read.filter(name__in=chunk).values_list("name", "validators"))
    return [
        (unit, UnitState(validators[unit], serials[unit]) if unit in validators else None, serial)
        for unit, serial in todo
    ]


def save_units(done: list[MirrorUnit]) -> None:
    """Keep the units read to the end (`done`, emptied) for the next run to ask about."""
    if not done:
        return
    if not Mirror.objects.filter(pk=done[0].mirror_id).exists():
        done.clear()  # the mirror was deleted meanwhile: nothing to resume
        return
    try:
        with transaction.atomic():
            MirrorUnit.objects.bulk_create(
                done,
                update_conflicts=True,
                unique_fields=["mirror", "name"],
                update_fields=["validators", "serial", "read_at"],
            )
    except IntegrityError:
        pass  # the mirror was deleted meanwhile: nothing to resume
    done.clear()

"""The warnings of a run about what the source lacks: units, and names the mirror's options
ask for."""

from __future__ import annotations

from channels_app.models import Package
from psm.redaction import redact

from ..models import Mirror

#: Units or names not found that a run's warnings list one by one; the rest are counted.
NOT_FOUND_LISTED = 50


def units_not_found(missing: list[tuple[str, str]]) -> list[str]:
    """One warning per unit the source lacks (the first `NOT_FOUND_LISTED`, then a count)."""
    lines = [
        f"{unit}: not found in the source" + (f" ({redact(url)})" if url else "")
        for unit, url in missing[:NOT_FOUND_LISTED]
    ]
    if len(missing) > NOT_FOUND_LISTED:
        lines.append(f"... and {len(missing) - NOT_FOUND_LISTED:,} more not found in the source")
    return lines


def names_not_found(mirror: Mirror) -> list[str]:
    """One warning per name of the mirror's options (R's package list) that the source's index
    does not have: the mirror holds no current package of that name."""
    names = mirror.format.requested_names(mirror.options)
    if not names:
        return []
    held = set(
        Package.objects.filter(mirror=mirror, removed=False, name__in=names)
        .values_list("name", flat=True)
        .distinct()
    )
    absent = [name for name in names if name not in held]
    lines = [
        f"{name}: named in the mirror's options, but not in the source's index"
        for name in absent[:NOT_FOUND_LISTED]
    ]
    if len(absent) > NOT_FOUND_LISTED:
        lines.append(f"... and {len(absent) - NOT_FOUND_LISTED:,} more names not in the index")
    return lines

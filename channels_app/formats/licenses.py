"""License families and SPDX identifiers: how a free-text upstream license is classified.

Upstream `license` fields are free text ("BSD 3-Clause", "GPL-3.0-or-later", "Apache 2.0",
"MIT AND BSD-3-Clause"). A license is split into its parts (on AND, OR, WITH, commas, slashes,
parentheses); each part gets a normalised identifier (upper case, spaces as dashes, a `v`
before a version dropped) and the families it belongs to by the table below. conda's own
`license_family` field is added when present. A rule value (a family or an identifier) matches
a package if it is one of the package's families or identifiers. A license that is empty,
"unknown", "NOASSERTION" or "NONE" is *unknown*: the policy's "unknown license" choice decides.
"""

from __future__ import annotations

import re
from functools import lru_cache

LICENSE_FAMILIES = (
    "AGPL",
    "GPL",
    "GPL2",
    "GPL3",
    "LGPL",
    "BSD",
    "MIT",
    "APACHE",
    "PSF",
    "MOZILLA",
    "Public-Domain",
    "Proprietary",
    "CC",
    "OTHER",
)
_FAMILY_KEYS = {family.upper(): family for family in LICENSE_FAMILIES}
# Which families a normalised identifier belongs to: first matching pattern wins.
_RULES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), families)
    for pattern, families in (
        (r"^AGPL", ("AGPL",)),
        (r"^LGPL", ("LGPL",)),
        (r"^GPL-?2", ("GPL", "GPL2")),
        (r"^GPL-?3", ("GPL", "GPL3")),
        (r"^GPL|^GNU-GENERAL", ("GPL",)),
        (r"^(0?BSD|NEW-BSD|BSD)", ("BSD",)),
        (r"^(MIT|X11|EXPAT)", ("MIT",)),
        (r"^APACHE|^ASL", ("APACHE",)),
        (r"^(PSF|PYTHON)", ("PSF",)),
        (r"^(MPL|MOZILLA)", ("MOZILLA",)),
        (r"^(CC0|UNLICENSE|PUBLIC-DOMAIN|PD$)", ("Public-Domain", "CC")),
        (r"^CC-", ("CC",)),
        (r"^(PROPRIETARY|COMMERCIAL|LICENSEREF-PROPRIETARY)", ("Proprietary",)),
    )
)
_UNKNOWN = frozenset({"", "UNKNOWN", "NOASSERTION", "NONE", "NULL", "N/A"})
_SPLIT = re.compile(r"\s+(?:AND|OR|WITH)\s+|[,/;()]|\s+\|\s+", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")


def normalize_license(value: str) -> str | None:
    """A rule value as compared: a family's canonical name, or an upper-case identifier.

    None when it is neither (the policy form says so).
    """
    key = _key(value)
    if key in _FAMILY_KEYS:
        return _FAMILY_KEYS[key]
    if key == "PUBLIC-DOMAIN":
        return "Public-Domain"
    return key if _IDENTIFIER.match(key) else None


@lru_cache(maxsize=65536)
def classify(license_text: str | None, license_family: str | None = None) -> frozenset[str]:
    """Every family and identifier a package's license belongs to; empty when unknown."""
    found: set[str] = set()
    for part in _SPLIT.split(license_text or ""):
        key = _key(part)
        if key in _UNKNOWN:
            continue
        found.add(key)
        families = next((fams for pattern, fams in _RULES if pattern.search(key)), ("OTHER",))
        found.update(families)
    family = _key(license_family or "")
    if family in _FAMILY_KEYS:
        found.add(_FAMILY_KEYS[family])
    return frozenset(found)


def _key(text: str) -> str:
    key = re.sub(r"\s+", "-", text.strip().strip('"').strip()).upper()
    key = re.sub(r"^(L?GPL|AGPL|MPL|APACHE)-?V(?=\d)", r"\1-", key)  # GPLv3 -> GPL-3
    return re.sub(r"-LICEN[SC]E$", "", key)  # "MIT License" -> MIT

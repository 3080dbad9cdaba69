"""CVSS base scores of vector strings (v3.0/v3.1 and v2), as the specifications compute them.

Pure Python; OSV advisories carry vectors (`osv.parse_advisory` scores them). CVSS v4 scores come
from lookup tables, so they are not computed here.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal


def _metrics(parts: list[str], base: dict[str, dict[str, float]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition(":")
        if not sep or not key or not value:
            raise ValueError(f"{part!r} is not METRIC:VALUE")
        if key in values:
            raise ValueError(f"metric {key} is given twice")
        if key in base and value not in base[key]:
            raise ValueError(f"{key}:{value} is not a valid value")
        values[key] = value
    missing = [key for key in base if key not in values]
    if missing:
        raise ValueError(f"missing metric(s) {', '.join(missing)}")
    return values


_V3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "PR": {"N": 0.85, "L": 0.62, "H": 0.27},  # scope changed: L 0.68, H 0.5
    "UI": {"N": 0.85, "R": 0.62},
    "S": {"U": 0.0, "C": 0.0},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
# Temporal and environmental metrics may follow; they do not change the base score.
_V3_OTHER = {"E", "RL", "RC", "CR", "IR", "AR", "MAV", "MAC", "MPR", "MUI", "MS", "MC", "MI", "MA"}


def _roundup(value: float) -> Decimal:
    """CVSS 3.1 Roundup: the smallest one-decimal number >= value, free of float error."""
    whole = round(value * 100_000)
    tenths = whole // 10_000 if whole % 10_000 == 0 else math.floor(whole / 10_000) + 1
    return Decimal(tenths) / 10


def cvss3_base_score(vector: str) -> Decimal:
    """The CVSS v3.0/v3.1 base score of a vector string (CVSS 3.1 specification, section 7.1)."""
    prefix, _, rest = vector.strip().partition("/")
    if prefix not in ("CVSS:3.0", "CVSS:3.1"):
        raise ValueError("expected 'CVSS:3.0/' or 'CVSS:3.1/' first")
    m = _metrics(rest.split("/") if rest else [], _V3)
    unknown = sorted(set(m) - set(_V3) - _V3_OTHER)
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}")
    changed = m["S"] == "C"
    pr = {"L": 0.68, "H": 0.5}.get(m["PR"], 0.85) if changed else _V3["PR"][m["PR"]]
    iss = 1 - (1 - _V3["C"][m["C"]]) * (1 - _V3["I"][m["I"]]) * (1 - _V3["A"][m["A"]])
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    exploitability = 8.22 * _V3["AV"][m["AV"]] * _V3["AC"][m["AC"]] * pr * _V3["UI"][m["UI"]]
    if impact <= 0:
        return Decimal("0.0")
    total = 1.08 * (impact + exploitability) if changed else impact + exploitability
    return _roundup(min(total, 10))


_V2 = {
    "AV": {"L": 0.395, "A": 0.646, "N": 1.0},
    "AC": {"H": 0.35, "M": 0.61, "L": 0.71},
    "Au": {"M": 0.45, "S": 0.56, "N": 0.704},
    "C": {"N": 0.0, "P": 0.275, "C": 0.660},
    "I": {"N": 0.0, "P": 0.275, "C": 0.660},
    "A": {"N": 0.0, "P": 0.275, "C": 0.660},
}
_V2_OTHER = {"E", "RL", "RC", "CDP", "TD", "CR", "IR", "AR"}


def cvss2_base_score(vector: str) -> Decimal:
    """The CVSS v2 base score of a vector string such as 'AV:N/AC:L/Au:N/C:P/I:P/A:P'."""
    text = vector.strip().removeprefix("(").removesuffix(")").removeprefix("CVSS:2.0/")
    m = _metrics(text.split("/") if text else [], _V2)
    unknown = sorted(set(m) - set(_V2) - _V2_OTHER)
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}")
    cia = (1 - _V2["C"][m["C"]]) * (1 - _V2["I"][m["I"]]) * (1 - _V2["A"][m["A"]])
    impact = 10.41 * (1 - cia)
    exploitability = 20 * _V2["AV"][m["AV"]] * _V2["AC"][m["AC"]] * _V2["Au"][m["Au"]]
    if impact <= 0:
        return Decimal("0.0")
    score = (0.6 * impact + 0.4 * exploitability - 1.5) * 1.176
    return Decimal(f"{score:.6f}").quantize(Decimal("0.1"), ROUND_HALF_UP)

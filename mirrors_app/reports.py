"""What a mirror's "See details" and "Download dependency report" show."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import orjson
from django.db.models import Count, Q
from rattler import Version

from channels_app.formats.conda import parse_match_spec
from policies_app.engine import Entry, compile_policy
from psm.redaction import scrub

from .models import Mirror

REPORT_COLUMNS = (
    "requested",
    "package",
    "version",
    "build",
    "subdir",
    "depth",
    "required_by",
    "status",
)


def dependency_report_unavailable(mirror: Mirror) -> str | None:
    """Why the mirror has no dependency report, or None when it has one."""
    policy = mirror.effective_policy()
    if policy is not None and policy.has_dependency_report:
        return None
    if policy is None:
        return (
            f"Mirror {mirror.name!r} has no policy. A dependency report needs a policy that "
            "allows packages by name (MatchSpec package rules) with 'Include dependencies' set."
        )
    return (
        f"Policy {policy.name!r} does not allow packages by name with 'Include dependencies' "
        "set, so no dependency report exists for this mirror."
    )


FAILURES_SHOWN = 100


def mirror_details(mirror: Mirror) -> dict:
    """Filtering by reason on the latest run, and how many packages are active vs passive."""
    listed = mirror.packages.filter(removed=False)
    counts = listed.aggregate(
        active=Count("pk", filter=Q(artifact__isnull=False)),
        passive=Count("pk", filter=Q(artifact__isnull=True, on_demand=True)),
        failed=Count("pk", filter=Q(artifact__isnull=True, on_demand=False)),
    )
    failures = listed.filter(artifact__isnull=True, on_demand=False).exclude(error="")
    policy = mirror.effective_policy()
    reason = dependency_report_unavailable(mirror)
    return {
        "mirror": mirror,
        "effective_policy": policy.name if policy else None,
        "policy_source": "mirror" if mirror.policy_id else ("channel" if policy else "none"),
        "packages_active": counts["active"],
        "packages_passive": counts["passive"],
        "packages_failed": counts["failed"],
        "failures": [
            {"path": p.path, "error": scrub(p.error)}  # also for errors recorded unscrubbed
            for p in failures.order_by("subdir", "filename").only("subdir", "filename", "error")[
                :FAILURES_SHOWN
            ]
        ],
        "latest_run": mirror.latest_run(),
        "dependency_report": reason or "available",
    }


def _entries(mirror: Mirror, **filters) -> list[tuple[Entry, str]]:
    """(entry, excluded reason) of the mirror's current packages."""
    rows = mirror.packages.filter(removed=False, **filters).values_list(
        "subdir", "filename", "record", "excluded"
    )
    found = []
    for subdir, filename, record, excluded in rows.iterator(10_000):
        found.append((Entry(filename, orjson.loads(record) if record else {}, subdir), excluded))
    return found


def _newest(candidates: list[tuple[Entry, str]]) -> tuple[Entry, str] | None:
    """The candidate a client would pick: present ones first, then the highest version."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (not c[1], Version(c[0].version), c[0].filename))


def dependency_report(mirror: Mirror) -> list[dict] | None:
    """Every package the policy's allow rules name, with its direct and indirect
    dependencies as a client would resolve them (per platform, with noarch); None when the
    mirror has no report (see `dependency_report_unavailable`).

    Each row: requested spec, package, version, build, subdir, depth (0 requested, 1 direct,
    2+ indirect), required by, and status: present, filtered (with the reason) or missing.
    """
    if dependency_report_unavailable(mirror):
        return None
    policy = mirror.effective_policy()
    compiled = compile_policy(policy)
    entries = _entries(mirror)
    reasons = {f"{e.subdir}/{e.filename}": why for e, why in entries}
    index: dict[str, dict[str, list[Entry]]] = {}
    for entry, _ in entries:
        index.setdefault(entry.subdir, {}).setdefault(entry.name.lower(), []).append(entry)
    rows: list[dict] = []
    for requested in policy.allow_specs:
        spec = parse_match_spec(requested)
        by_subdir: dict[str, list[tuple[Entry, str]]] = {}
        for subdir, names in index.items():
            for entry in names.get(spec.name.normalized, ()):
                if spec.matches(entry.rattler):
                    key = entry.key
                    by_subdir.setdefault(subdir, []).append((entry, reasons[key]))
        if not by_subdir:
            rows.append(_row(requested, spec.name.normalized, None, "", 0, "", "missing"))
        for subdir in sorted(by_subdir):
            root = _newest(by_subdir[subdir])
            _walk(requested, root, compiled, index, reasons, rows)
    return rows


def _walk(requested, root, compiled, index, reasons, rows) -> None:
    seen = set()
    stack = [(root, 0, "")]
    while stack:
        (entry, why), depth, parent = stack.pop(0)
        key = entry.key
        status = "present" if not why else f"filtered: {why}"
        rows.append(_row(requested, entry.name, entry, entry.subdir, depth, parent, status))
        if key in seen:
            continue
        seen.add(key)
        for text, matches in compiled.dependencies(entry, index):
            chosen = _newest([(m, reasons[m.key]) for m in matches])
            if chosen is None:
                name = text.split()[0]
                rows.append(
                    _row(requested, name, None, entry.subdir, depth + 1, entry.name, "missing")
                )
            elif chosen[0].key not in seen:
                stack.append((chosen, depth + 1, entry.name))


def _row(requested, package, entry, subdir, depth, required_by, status) -> dict:
    return {
        "requested": requested,
        "package": package,
        "version": entry.version if entry else "",
        "build": str(entry.record.get("build", "")) if entry else "",
        "subdir": subdir,
        "depth": depth,
        "required_by": required_by,
        "status": status,
    }


def as_csv(rows: Iterable[dict], columns: Iterable[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def excluded_packages(mirror: Mirror) -> list[dict]:
    """Every package of the mirror the policy keeps out, with the reason."""
    rows = (
        mirror.packages.filter(removed=False)
        .exclude(excluded="")
        .order_by("subdir", "filename")
        .values_list("subdir", "filename", "name", "version", "excluded")
    )
    return [
        {"path": f"{s}/{f}", "name": n, "version": v, "reason": r}
        for s, f, n, v, r in rows.iterator(10_000)
    ]


def explain(mirror: Mirror, query: str) -> list[dict]:
    """Why each package of the mirror named `query` (a name or a file name) is in or out."""
    query = query.strip()
    field = "filename" if query.endswith((".conda", ".tar.bz2")) else "name"
    rows = mirror.packages.filter(removed=False, **{field: query}).order_by("subdir", "filename")
    policy = mirror.effective_policy()
    return [
        {
            "path": p.path,
            "version": p.version,
            "allowed": not p.excluded,
            "reason": p.excluded or ("allowed by " + (policy.name if policy else "no policy")),
            "stored": p.artifact_id is not None,
        }
        for p in rows
    ]

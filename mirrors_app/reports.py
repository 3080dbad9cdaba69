"""What a mirror's "See details" and "Download dependency report" show, and the files
(CSV, a zip of several) the admin and the API hand out."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cmp_to_key

import orjson
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from policies_app.compiling import compile_policy
from policies_app.ecosystems import Candidate
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

#: What becomes of each file the source offers, as the details page counts and lists it. Every
#: current package row of a mirror is in exactly one state; entries the mirror could not take
#: in at all (`MirrorRejection`) count as excluded. So the counts add up to what the source
#: offered, and each count is the length of the list `mirror_files` gives for its state.
STATES = {
    "stored": "Stored here (downloaded by a run)",
    "cached": "Cached on first request (passive)",
    "waiting": "Waiting for a first request (passive)",
    "not_downloaded": "Not downloaded yet (the run stopped or is still going)",
    "failed": "Failed downloads (not served)",
    "excluded": "Excluded (kept out by a filter, the policy, or as unsafe or invalid)",
}
_ALLOWED = Q(excluded_reason="")
_STATE_FILTERS = {
    "stored": _ALLOWED & Q(artifact__isnull=False, on_demand=False),
    "cached": _ALLOWED & Q(artifact__isnull=False, on_demand=True),
    "waiting": _ALLOWED & Q(artifact__isnull=True, on_demand=True, error=""),
    "not_downloaded": _ALLOWED & Q(artifact__isnull=True, on_demand=False, error=""),
    "failed": _ALLOWED & Q(artifact__isnull=True) & ~Q(error=""),
    "excluded": ~_ALLOWED,
}
#: Lists beside the partition above (each of their files is also in one of its states).
FIGURES = {
    "would_block": "Would be blocked by the dry-run policy (let in while it only records)",
}
_FIGURE_FILTERS = {"would_block": ~Q(would_exclude_reason="")}
#: Every list `mirror_files` gives: the states, then the figures.
FILE_LISTS = {**STATES, **FIGURES}
EXCLUDED_COLUMNS = ("path", "name", "version", "reason")
#: Policy enforcements shown with the details (all of them: the enforcements list).
ENFORCEMENTS_SHOWN = 10


def package_counts(mirror: Mirror) -> dict[str, int]:
    """The mirror's current files by state (see STATES), and `offered`, their sum."""
    counts = mirror.packages.filter(removed=False).aggregate(
        **{state: Count("pk", filter=where) for state, where in _STATE_FILTERS.items()}
    )
    counts["excluded"] += mirror.rejections.count()
    counts["offered"] = sum(counts.values())
    return counts


def package_holdings(mirror: Mirror) -> dict[str, int]:
    """What the mirror brought into its channel, as deleting it tells: its current packages
    (the package rows counted in STATES, allowed or excluded), how many have their file stored
    here, and those files' bytes (a file another channel also holds is counted too)."""
    stored = Q(artifact__isnull=False)
    return mirror.packages.filter(removed=False).aggregate(
        packages=Count("pk"),
        stored=Count("pk", filter=stored),
        stored_bytes=Coalesce(Sum("artifact__size", filter=stored), 0),
    )


def excluded_by_reason(mirror: Mirror) -> dict[str, int]:
    """How many files each reason keeps out, most first; sums to the `excluded` count."""
    found: Counter[str] = Counter()
    for rows in (
        mirror.packages.filter(removed=False)
        .exclude(excluded_reason="")
        .values_list("excluded_reason"),
        mirror.rejections.values_list("reason"),
    ):
        for reason, count in rows.annotate(n=Count("pk")).order_by():
            found[reason] += count
    return dict(found.most_common())


def mirror_files(mirror: Mirror, state: str) -> Sequence[dict]:
    """The files of the mirror in `state` (see FILE_LISTS), as a lazily sliced sequence (a
    page is read with LIMIT/OFFSET): path, name, version, reason (why excluded, why the
    download failed, or why the dry-run policy would block it) and since when."""
    where = _STATE_FILTERS[state] if state in STATES else _FIGURE_FILTERS[state]
    reason = "would_exclude_reason" if state in FIGURES else "excluded_reason"
    rows = (
        mirror.packages.filter(where, removed=False)
        .order_by("unit", "filename")
        .values_list("unit", "filename", "name", "version", reason, "error", "updated_at")
    )
    parts: list[tuple] = [(rows, _package_file)]
    if state == "excluded":
        rejected = mirror.rejections.order_by("unit", "filename").values_list(
            "unit", "filename", "reason", "seen_at"
        )
        parts.append((rejected, _rejected_file))
    return _Chained(parts)


def _package_file(row: tuple) -> dict:
    unit, filename, name, version, excluded, error, at = row
    path = f"{unit}/{filename}" if unit else filename
    return {"path": path, "name": name, "version": version, "reason": excluded or error, "at": at}


def _rejected_file(row: tuple) -> dict:
    unit, filename, reason, at = row
    path = f"{unit}/{filename}" if unit else filename
    return {"path": path, "name": "", "version": "", "reason": reason, "at": at}


class _Chained(Sequence):
    """Querysets read one after the other as one list, each row made a dict; slices query only
    the rows they cover (what a paginator needs)."""

    def __init__(self, parts: list[tuple]) -> None:
        self.parts = parts
        self._counts: list[int] | None = None

    def count(self) -> int:
        if self._counts is None:
            self._counts = [rows.count() for rows, _ in self.parts]
        return sum(self._counts)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index):
        if not isinstance(index, slice):
            found = self[index : index + 1]
            if not found:
                raise IndexError(index)
            return found[0]
        start, stop, _ = index.indices(self.count())
        out: list[dict] = []
        for (rows, to_dict), count in zip(self.parts, self._counts or [], strict=True):
            if stop > 0 and start < count:
                out.extend(to_dict(r) for r in rows[max(start, 0) : min(stop, count)])
            start, stop = start - count, stop - count
        return out

    def __iter__(self):
        for rows, to_dict in self.parts:
            for row in rows.iterator(10_000):
                yield to_dict(row)


def would_block_count(mirror: Mirror) -> int:
    """How many current files a dry-run policy would block (see FIGURES)."""
    return mirror.packages.filter(_FIGURE_FILTERS["would_block"], removed=False).count()


def mirror_details(mirror: Mirror) -> dict:
    """The mirror's current files by state and exclusion reason, the first failures, the
    files a dry-run policy would block, the latest run (whose own counters say what that run
    did, apart from the state) and the latest policy enforcements."""
    counts = package_counts(mirror)
    policy = mirror.effective_policy()
    reason = dependency_report_unavailable(mirror)
    return {
        "mirror": mirror,
        "effective_policy": policy.name if policy else None,
        "policy_source": "mirror" if mirror.policy_id else ("channel" if policy else "none"),
        "packages": counts,
        "excluded_by_reason": excluded_by_reason(mirror),
        # Earlier names, kept for API clients: files served from here (downloaded by runs),
        # passive files (cached or waiting), failed downloads.
        "packages_active": counts["stored"],
        "packages_passive": counts["cached"] + counts["waiting"],
        "packages_failed": counts["failed"],
        "failures": [
            {"path": f["path"], "error": scrub(f["reason"]), "at": f["at"]}  # scrub: old rows
            for f in mirror_files(mirror, "failed")[:FAILURES_SHOWN]
        ],
        "would_block": would_block_count(mirror),
        "latest_run": mirror.latest_run(),
        "enforcements": list(mirror.enforcements.all()[:ENFORCEMENTS_SHOWN]),
        "dependency_report": reason or "available",
    }


def _candidates(mirror: Mirror, ecosystem) -> list[tuple[Candidate, str]]:
    """(candidate, excluded reason) of the mirror's current packages."""
    rows = mirror.packages.filter(removed=False).values_list(
        "unit", "filename", "version", "record", "excluded_reason"
    )
    return [
        (ecosystem.candidate(unit, filename, version, orjson.loads(record) if record else {}), why)
        for unit, filename, version, record, why in rows.iterator(10_000)
    ]


def _newest(ecosystem, candidates: list[tuple[Candidate, str]]) -> tuple[Candidate, str] | None:
    """The candidate a client would pick: present ones first, then the highest version."""
    if not candidates:
        return None

    def order(a: tuple[Candidate, str], b: tuple[Candidate, str]) -> int:
        if bool(a[1]) != bool(b[1]):
            return -1 if a[1] else 1  # excluded ones sort lower
        try:
            by_version = ecosystem.compare(a[0].version, b[0].version)
        except Exception:  # an unreadable version sorts by file name alone
            by_version = 0
        return by_version or (a[0].filename > b[0].filename) - (a[0].filename < b[0].filename)

    return max(candidates, key=cmp_to_key(order))


def dependency_report(mirror: Mirror) -> list[dict] | None:
    """Every package the policy's allow rules name, with its direct and indirect
    dependencies as a client would resolve them (conda: per platform, with noarch); None when
    the mirror has no report (see `dependency_report_unavailable`).

    Each row: requested spec, package, version, build, subdir (the unit), depth (0 requested,
    1 direct, 2+ indirect), required by, and status: present, filtered (with the reason) or
    missing.
    """
    if dependency_report_unavailable(mirror):
        return None
    policy = mirror.effective_policy()
    compiled = compile_policy(policy, kind=mirror.channel.kind)
    ecosystem = compiled.ecosystem
    found = _candidates(mirror, ecosystem)
    reasons = {c.key: why for c, why in found}
    index = compiled.index(c for c, _ in found)
    rows: list[dict] = []
    for requested in policy.allow_specs:
        spec = ecosystem.parse_spec(requested)
        by_pool: dict[str, list[tuple[Candidate, str]]] = {}
        for pool, names in index.items():
            for candidate in names.get(spec.name, ()):
                if spec.matches(candidate):
                    by_pool.setdefault(pool, []).append((candidate, reasons[candidate.key]))
        if not by_pool:
            rows.append(_row(requested, spec.name, None, "", 0, "", "missing"))
        for pool in sorted(by_pool):
            root = _newest(ecosystem, by_pool[pool])
            _walk(requested, root, compiled, index, reasons, rows)
    return rows


def _walk(requested, root, compiled, index, reasons, rows) -> None:
    seen = set()
    stack = [(root, 0, "")]
    ecosystem = compiled.ecosystem
    while stack:
        (candidate, why), depth, parent = stack.pop(0)
        key = candidate.key
        status = "present" if not why else f"filtered: {why}"
        rows.append(
            _row(requested, candidate.name, candidate, candidate.unit, depth, parent, status)
        )
        if key in seen:
            continue
        seen.add(key)
        for text, matches in compiled.dependencies(candidate, index):
            chosen = _newest(ecosystem, [(m, reasons[m.key]) for m in matches])
            if chosen is None:
                name = text.split()[0]
                rows.append(
                    _row(
                        requested, name, None, candidate.unit, depth + 1, candidate.name, "missing"
                    )
                )
            elif chosen[0].key not in seen:
                stack.append((chosen, depth + 1, candidate.name))


def _row(requested, package, candidate, subdir, depth, required_by, status) -> dict:
    return {
        "requested": requested,
        "package": package,
        "version": candidate.version if candidate else "",
        "build": str(candidate.record.get("build", "")) if candidate else "",
        "subdir": subdir,
        "depth": depth,
        "required_by": required_by,
        "status": status,
    }


def excluded_packages(mirror: Mirror) -> list[dict]:
    """Every file of the mirror kept out (by a filter, the policy, or as unsafe or invalid),
    with the reason: the list behind the `excluded` count."""
    return [
        {column: row[column] for column in EXCLUDED_COLUMNS}
        for row in mirror_files(mirror, "excluded")
    ]


def explain(mirror: Mirror, query: str) -> list[dict]:
    """Why each file of the mirror named `query` (a name or a file name) is in or out,
    including index entries the mirror could not take in (matched by file name)."""
    query = query.strip()
    field = "filename" if mirror.format.names_a_file(query) else "name"
    rows = mirror.packages.filter(removed=False, **{field: query}).order_by("unit", "filename")
    policy = mirror.effective_policy()
    found = [
        {
            "path": p.path,
            "version": p.version,
            "allowed": not p.excluded_reason,
            "reason": p.excluded_reason
            or ("allowed by " + (policy.name if policy else "no policy")),
            "stored": p.artifact_id is not None,
            "would_block": p.would_exclude_reason,
        }
        for p in rows
    ]
    rejected = mirror.rejections.filter(filename=query).order_by("unit")
    found += [
        {
            "path": r["path"],
            "version": "",
            "allowed": False,
            "reason": r["reason"],
            "stored": False,
            "would_block": "",
        }
        for r in map(_rejected_file, rejected.values_list("unit", "filename", "reason", "seen_at"))
    ]
    return found


# --- Downloads, for the admin and the API alike ---------------------------------------------

#: The file name of several mirrors' dependency reports downloaded at once.
DEPENDENCY_REPORTS_ZIP = "dependency-reports.zip"


def report_filename(mirror: Mirror, report: str) -> str:
    """A safe download file name: channel, mirror and report, e.g. main-forge-excluded.csv."""
    name = f"{mirror.channel.path}-{mirror.name}-{report}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".csv"


def as_csv(rows: Iterable[dict], columns: Iterable[str]) -> str:
    """The rows as CSV text: a header of `columns`, then those fields of each row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def reports_zip(files: Iterable[tuple[str, str]]) -> bytes:
    """A zip archive of several reports, each given as (file name, CSV text)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files:
            archive.writestr(name, text)
    return buffer.getvalue()

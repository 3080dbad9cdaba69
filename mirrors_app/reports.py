"""What a mirror's "See details" and "Download dependency report" show."""

from __future__ import annotations

from django.db.models import Count, Q

from .models import Mirror


def dependency_report_unavailable(mirror: Mirror) -> str | None:
    """Why the mirror has no dependency report, or None when it has one."""
    policy = mirror.effective_policy()
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
            {"path": p.path, "error": p.error}
            for p in failures.order_by("subdir", "filename").only("subdir", "filename", "error")[
                :FAILURES_SHOWN
            ]
        ],
        "latest_run": mirror.latest_run(),
        "dependency_report": reason or "available",
    }

"""Continuous enforcement: decide again, without fetching upstream, whenever what a decision
depends on changes (advisories, the name mapping, a policy, a waiver, the date).

Each affected mirror's stored packages are decided again (`packages_decide`); when that changes
anything, the channel is published at once (a frozen one only with the policy's "enforce on
frozen channels", and then only loses the newly blocked files), and the change is recorded
(`PolicyEnforcement`, the audit log) and announced to the webhook. A mirror whose decision
inputs did not change since its last decision (`policy_fingerprint`) costs one comparison.

The decisions live with the mirrors (mirrors_app), which import this app: their modules are
imported inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q

from psm.audit import audit_record
from psm.webhooks import announce

logger = logging.getLogger(__name__)

#: Changes (path, change, reason) kept on a record, shown in the audit log and announced.
CHANGES_KEPT = 1000
#: Changes named in the audit event; the record has the rest.
CHANGES_AUDITED = 100
#: The webhook event of an enforcement that changed something.
EVENT = "policy.enforced"
#: `enforce_due`'s trigger: what changes with time alone.
SCHEDULED = "scheduled check (cooldown, waiver expiry)"


def request_enforcement(
    *, trigger: str, policy=None, mirror_ids: Iterable[int] | None = None, user=None
) -> None:
    """Queue a re-decision of the mirrors `policy` governs (every mirror when None; only
    `mirror_ids` when given) once the current transaction commits; `trigger` says why in the
    records, with who did it (`user`) when a person did."""
    from .tasks import enforce as enforce_task

    if user is not None and user.is_authenticated:
        trigger = f"{trigger} by {user.get_username()}"
    policy_id = policy.pk if policy is not None else None
    ids = sorted(set(mirror_ids)) if mirror_ids is not None else None
    if ids == []:
        return
    transaction.on_commit(
        lambda: enforce_task.delay(trigger=trigger, policy_id=policy_id, mirror_ids=ids)
    )


def affected_mirrors(*, policy_id: int | None = None, mirror_ids: Iterable[int] | None = None):
    """The mirrors whose effective policy is `policy_id` (their own, or their channel's when
    they have none); every mirror when None; narrowed to `mirror_ids` when given."""
    from mirrors_app.models import Mirror

    mirrors = Mirror.objects.select_related("channel__policy", "policy").order_by("pk")
    if policy_id is not None:
        mirrors = mirrors.filter(
            Q(policy_id=policy_id) | Q(policy__isnull=True, channel__policy_id=policy_id)
        )
    if mirror_ids is not None:
        mirrors = mirrors.filter(pk__in=list(mirror_ids))
    return mirrors


def enforce(
    *,
    trigger: str,
    policy_id: int | None = None,
    force: bool = False,
    mirror_ids: Iterable[int] | None = None,
) -> list:
    """Decide again the packages of the mirrors a change affects (see `affected_mirrors`) and
    return the PolicyEnforcement records of those where something changed. A mirror with a
    run in progress is left to the run (it decides again at its end, its policy fingerprint
    having changed); one whose fingerprint did not change is skipped unless `force`."""
    records = []
    for mirror in affected_mirrors(policy_id=policy_id, mirror_ids=mirror_ids):
        try:
            record = mirror_enforce(mirror=mirror, trigger=trigger, force=force)
        except Exception:  # one mirror's failure must not keep the others unprotected
            logger.exception("enforcing the policy of mirror %s (%s) failed", mirror.pk, mirror)
            continue
        if record is not None:
            records.append(record)
    return records


def mirror_enforce(*, mirror, trigger: str, force: bool = False):
    """Decide the mirror's packages again and publish, record and announce what changed;
    None when skipped or when nothing changed."""
    from mirrors_app.models import Mirror
    from mirrors_app.sync.policy import packages_decide, policy_fingerprint

    if mirror.runs.active().exists():
        logger.info(
            "mirror %s (%s): a run is in progress and decides again at its end", mirror.pk, mirror
        )
        return None
    before, fingerprint = mirror.policy_fingerprint, policy_fingerprint(mirror)
    if fingerprint == before and not force:
        return None
    # Claimed by a conditional update: of two enforcements after the same change (an advisory
    # load and the hourly check, say) only one decides and records it.
    if not Mirror.objects.filter(pk=mirror.pk, policy_fingerprint=before).update(
        policy_fingerprint=fingerprint
    ):
        logger.info("mirror %s (%s): decided meanwhile by another enforcement", mirror.pk, mirror)
        return None
    try:
        change = packages_decide(mirror=mirror)
    except Exception:
        # Undecided after all: the next enforcement must not take it for done.
        Mirror.objects.filter(pk=mirror.pk, policy_fingerprint=fingerprint).update(
            policy_fingerprint=before
        )
        raise
    mirror.policy_fingerprint = fingerprint
    would_leave = change.would_leave
    if not (change.entering or change.leaving or would_leave):
        return None
    policy = mirror.effective_policy()
    published = False
    if change.entering or change.leaving:
        try:
            published = _publish(mirror, policy, change)
        except Exception:
            # The decisions stand (and are recorded); the index must follow them soon.
            logger.exception("publishing channel %s after enforcement failed", mirror.channel)
            _publish_later(mirror.channel_id)
    return _record(mirror, policy, change, would_leave, trigger=trigger, published=published)


def _publish_later(channel_id: int) -> None:
    from channels_app.tasks import publish_channel

    transaction.on_commit(lambda: publish_channel.delay(channel_id))


def _publish(mirror, policy, change) -> bool:
    """Make the served index show the new decisions; whether it was published again. A frozen
    channel keeps its pinned index, unless the policy enforces on frozen channels: then only
    the files that left are withdrawn from it (none enter)."""
    from channels_app.publishing import channel_needs_publish, channel_publish

    channel = mirror.channel
    channel.refresh_from_db()
    if not channel.frozen:
        if channel_publish(channel=channel):
            return True
        channel.refresh_from_db()  # published meanwhile by someone else, or frozen meanwhile
        return not channel.frozen and not channel_needs_publish(channel)
    if policy is None or not policy.enforce_on_frozen or not change.leaving:
        return False
    from channels_app.publishing import channel_withdraw

    paths = [tuple(key.rsplit("/", 1)) for key, _ in change.leaving]
    return bool(channel_withdraw(channel=channel, paths=paths))


def _changes(change, would_leave: list[tuple[str, str]]) -> list[dict]:
    """The changes as recorded, those that keep files out first, at most CHANGES_KEPT."""
    found = [{"path": p, "change": "left", "reason": r} for p, r in change.leaving]
    found += [{"path": p, "change": "would leave", "reason": r} for p, r in would_leave]
    found += [{"path": p, "change": "entered", "reason": ""} for p in change.entering]
    return found[:CHANGES_KEPT]


def _record(mirror, policy, change, would_leave, *, trigger: str, published: bool):
    from mirrors_app.models import PolicyEnforcement

    from .models import Policy

    changes = _changes(change, would_leave)
    with transaction.atomic():
        record = PolicyEnforcement.objects.create(
            mirror=mirror,
            trigger=trigger[:200],
            policy_name=policy.name if policy else "",
            dry_run=policy is not None and policy.mode == Policy.Mode.DRY_RUN,
            entered=len(change.entering),
            left=len(change.leaving),
            would_leave=len(would_leave),
            changes=changes,
            published=published,
        )
        counts = {"entered": record.entered, "left": record.left, "would_leave": record.would_leave}
        audit_record(
            actor=None,
            action="policy.enforce",
            target=mirror,
            enforcement=record.pk,
            channel=mirror.channel.path,
            policy=record.policy_name or None,
            trigger=record.trigger,
            dry_run=record.dry_run,
            published=published,
            **counts,
            changes=changes[:CHANGES_AUDITED],
        )
        announce(
            EVENT,
            {
                "enforcement": record.pk,
                "mirror": {"id": mirror.pk, "name": mirror.name},
                "channel": mirror.channel.path,
                "policy": record.policy_name or None,
                "trigger": record.trigger,
                "dry_run": record.dry_run,
                "published": published,
                "counts": counts,
                "changes": changes,
            },
        )
    logger.info(
        "mirror %s (%s): %s; %d left, %d entered, %d would leave",
        mirror.pk,
        mirror,
        trigger,
        record.left,
        record.entered,
        record.would_leave,
    )
    return record

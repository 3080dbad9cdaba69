"""A mirror that verifies itself: re-hash stored files, check indexes against storage.

Each run re-hashes stored files oldest-verified first, within a budget (bytes and files), so
every file is covered in turn; storing a file counts as verifying it. It also checks that every
package the published indexes list is the file its index entry describes (sha256, size).

A damaged file is never served again, from the moment it is found: its blob is deleted (so a
later write of the same content stores good bytes instead of keeping the damaged ones), its
Artifact row too (so nothing links to it by digest), and what referred to it is withdrawn:

- an active package loses its file and becomes a failed download ("stored file damaged: …"),
  not served and dropped from the index at the publish that follows; the next run downloads
  it again, or at once with `repair` (checked against its index entry, as any download);
- a passive package's cached file is dropped, so its next request fetches it again;
- a sidecar (PEP 658 metadata) is dropped: it is fetched again on its next request;
- a published index file is withdrawn and the channel re-rendered at once (a forced publish).
  A frozen channel is not re-rendered: the file answers 404 until the channel is unfrozen and
  a later verification re-renders it. (Its pinned index also keeps listing a withdrawn active
  file, which answers 404 until stored again.)

Each finding is a VerificationProblem on the channel (and the mirror of the package), open until
fixed. `verify_storage` is called by the scheduled task and `manage.py verify`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.deletion import ProtectedError
from django.db.models.functions import Lower
from django.utils import timezone

from psm.http import CHUNK_SIZE, UpstreamClient, UpstreamError
from psm.redaction import scrub

from . import storage
from .formats import get_format
from .models import Artifact, Channel, Package, PublishedFile, VerificationProblem
from .publishing import channel_publish

logger = logging.getLogger(__name__)

PAGE = 200
#: Resolved problems are kept this long, then deleted.
RESOLVED_KEPT = timedelta(days=30)

ACTIVE_ACTION = (
    "withdrawn: not served, and left out of the index from the next publish; "
    "downloaded again by the mirror's next run or `verify --repair`"
)
PASSIVE_ACTION = "dropped: fetched again from the source on its next request"
INDEX_ACTION = "withdrawn and re-rendered"
FROZEN_ACTION = (
    "withdrawn (404): the channel is frozen; the first verification after it is unfrozen "
    "re-renders it"
)


@dataclass
class VerifyReport:
    """What one verification did."""

    files: int = 0  # stored files re-hashed
    bytes: int = 0  # bytes read doing so
    damaged: int = 0  # stored files found damaged (each may affect several channels)
    found: list[VerificationProblem] = field(default_factory=list)  # problems recorded
    resolved: int = 0  # problems (new or earlier) fixed by this run or found fixed
    still_open: int = 0  # problems left open in the verified scope

    def as_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "damaged": self.damaged,
            "problems": len(self.found),
            "resolved": self.resolved,
            "open": self.still_open,
        }


@dataclass
class _Changes:
    """Channels whose packages verification changed (publish) or whose index files it
    withdrew (re-render everything)."""

    publish: set[int] = field(default_factory=set)
    rerender: set[int] = field(default_factory=set)


def verify_storage(
    *,
    channel: Channel | None = None,
    max_bytes: int | None = None,
    max_files: int | None = None,
    repair: bool = False,
) -> VerifyReport:
    """Verify stored files (within the budget; None: no limit) and the published indexes,
    withdraw what is damaged, record problems; with `repair`, fetch damaged active files again.

    `channel`: only that channel's files and problems.
    """
    report, changes = VerifyReport(), _Changes()
    _rehash(channel, max_bytes, max_files, report, changes)
    _check_index_entries(channel, report, changes)
    if repair:
        _refetch_withdrawn(channel, changes)
    report.resolved += _publish(channel, changes)
    report.resolved += _resolve_fixed(channel)
    report.still_open = _open_problems(channel).count()
    # As they ended (repairs and re-renders update them after they are recorded).
    final = VerificationProblem.objects.select_related("channel__parent").in_bulk(
        [problem.pk for problem in report.found]
    )
    report.found = [final[problem.pk] for problem in report.found if problem.pk in final]
    VerificationProblem.objects.filter(resolved_at__lt=timezone.now() - RESOLVED_KEPT).delete()
    logger.info("verification: %s", report.as_dict())
    return report


def problems_of(*, channel: Channel | None = None, mirror=None) -> QuerySet[VerificationProblem]:
    """Problems to show, open ones first, newest first: a channel's, or a mirror's with its
    channel's index files."""
    rows = VerificationProblem.objects.all()
    if channel is not None:
        rows = rows.filter(channel=channel)
    if mirror is not None:
        index = Q(channel_id=mirror.channel_id, kind=VerificationProblem.Kind.INDEX)
        rows = rows.filter(Q(mirror=mirror) | index)
    return rows.select_related("channel__parent", "mirror").order_by(
        F("resolved_at").desc(nulls_first=True), "-found_at", "-pk"
    )


PROBLEMS_SHOWN = 50


def problems_shown(*, channel: Channel | None = None, mirror=None) -> dict:
    """What the admin pages show: the counts and the first problems (open first)."""
    rows = problems_of(channel=channel, mirror=mirror)
    return {
        "open": rows.filter(resolved_at__isnull=True).count(),
        "total": rows.count(),
        "problems": list(rows[:PROBLEMS_SHOWN]),
    }


# --- Re-hashing stored files --------------------------------------------------------------


def _rehash(
    channel: Channel | None,
    max_bytes: int | None,
    max_files: int | None,
    report: VerifyReport,
    changes: _Changes,
) -> None:
    """Hash stored files, oldest-verified first, until the budget is spent (at least one)."""
    started = timezone.now()
    # Files verified since this run began are done: each one checked leaves the list.
    candidates = _stored_files(channel).filter(verified_at__lt=started)
    while True:
        page = list(candidates.order_by("verified_at", "pk")[:PAGE])
        if not page:
            return
        for artifact in page:
            if (max_files is not None and report.files >= max_files) or (
                max_bytes is not None and report.bytes >= max_bytes
            ):
                return
            damage, read = _damage(artifact)
            Artifact.objects.filter(pk=artifact.pk).update(verified_at=timezone.now())
            report.files += 1
            report.bytes += read
            if damage:
                report.damaged += 1
                _withdraw_artifact(artifact, _damaged(damage), report, changes)


def _stored_files(channel: Channel | None) -> QuerySet[Artifact]:
    if channel is None:
        return Artifact.objects.all()
    packages = Package.objects.filter(channel=channel)
    return Artifact.objects.filter(
        Q(pk__in=packages.values("artifact_id"))
        | Q(pk__in=packages.values("sidecar_id"))
        | Q(pk__in=PublishedFile.objects.filter(channel=channel).values("artifact_id"))
    )


def _damage(artifact: Artifact) -> tuple[str | None, int]:
    """(what is wrong with the stored bytes or None, bytes read)."""
    size = 0
    try:
        for chunk in storage.checked_chunks(artifact, CHUNK_SIZE):
            size += len(chunk)
    except storage.DamagedFile as exc:
        return exc.problem, size
    except FileNotFoundError:
        return "missing from storage", size
    except OSError as exc:
        return f"cannot be read ({exc})", size
    return None, size


def _damaged(problem: str) -> str:
    """A damaged stored file's problem, as reported."""
    return f"stored file damaged: {problem}"


def record_rendered_anew(channel: Channel, damaged: dict[str, storage.DamagedFile]) -> None:
    """Index files of the channel a publish found damaged (by path) and rendered anew in the
    same publish: reported, resolved, as a verification run reports what it fixes."""
    now = timezone.now()
    VerificationProblem.objects.bulk_create(
        VerificationProblem(
            channel=channel,
            kind=VerificationProblem.Kind.INDEX,
            path=path[:500],
            problem=_damaged(found.problem)[:500],
            action=INDEX_ACTION,
            resolved_at=now,
        )
        for path, found in damaged.items()
    )


def withdraw_damaged(damaged: storage.DamagedFile) -> VerifyReport:
    """Damage found outside a verification run (a publish reading a file to build another from
    it): the file is withdrawn and reported as a run would, and its channels published again."""
    report, changes = VerifyReport(damaged=1), _Changes()
    _withdraw_artifact(damaged.artifact, _damaged(damaged.problem), report, changes)
    for pk in sorted(changes.publish | changes.rerender):
        channel = Channel.objects.filter(pk=pk).first()
        if channel is not None:
            mine = _Changes({pk} & changes.publish, {pk} & changes.rerender)
            report.resolved += _publish(channel, mine)
    return report


def _withdraw_artifact(
    artifact: Artifact, problem: str, report: VerifyReport, changes: _Changes
) -> None:
    """Make sure nothing serves or links to a damaged file, and record who had it."""
    logger.warning("verification: %s: %s", artifact.sha256, problem)
    with transaction.atomic():
        if not Artifact.objects.select_for_update().filter(pk=artifact.pk).exists():
            return  # withdrawn by a concurrent verification (its blob may be stored anew)
        for package in Package.objects.filter(artifact=artifact).select_related("channel"):
            _withdraw_package(package, problem, report, changes)
        for package in Package.objects.filter(sidecar=artifact).select_related("channel"):
            Package.objects.filter(pk=package.pk).update(sidecar=None)
            suffix = get_format(package.channel.kind).capabilities.sidecar_suffix
            _record(package.channel, package.mirror_id, package.path + suffix, problem, report)
        published = PublishedFile.objects.filter(artifact=artifact).select_related("channel")
        for index_file in published:
            changes.rerender.add(index_file.channel_id)
            _record(index_file.channel, None, index_file.path, problem, report, index=True)
        published.delete()
        try:
            with transaction.atomic():
                Artifact.objects.filter(pk=artifact.pk).delete()
        except ProtectedError:
            pass  # linked anew meanwhile: its missing blob is found by the next run
    try:
        # Also so that storing the same content again writes good bytes, not keeps these.
        storage.delete_blob(artifact.sha256)
    except OSError:
        logger.exception("verification: could not delete the damaged %s", artifact.sha256)


def _withdraw_package(
    package: Package, problem: str, report: VerifyReport, changes: _Changes
) -> None:
    """Unlink a package from a file it must not be served from (see the module docstring)."""
    now = timezone.now()
    if package.on_demand:
        Package.objects.filter(pk=package.pk).update(artifact=None, error="")
    else:
        Package.objects.filter(pk=package.pk).update(
            artifact=None, error=problem[:500], updated_at=now
        )
        Channel.objects.filter(pk=package.channel_id).update(
            content_version=F("content_version") + 1
        )
        changes.publish.add(package.channel_id)
    _record(package.channel, package.mirror_id, package.path, problem, report, package=package)


def _record(
    channel: Channel,
    mirror_id: int | None,
    path: str,
    problem: str,
    report: VerifyReport,
    *,
    package: Package | None = None,
    index: bool = False,
) -> None:
    if index:
        kind, action, resolved = VerificationProblem.Kind.INDEX, INDEX_ACTION, None
        if channel.frozen:
            action = FROZEN_ACTION
    elif package is not None and not package.on_demand:
        kind, action, resolved = VerificationProblem.Kind.PACKAGE, ACTIVE_ACTION, None
    else:  # a passive file or a sidecar: dropping it is the fix
        kind, action, resolved = VerificationProblem.Kind.PACKAGE, PASSIVE_ACTION, timezone.now()
        report.resolved += 1
    report.found.append(
        VerificationProblem.objects.create(
            channel=channel,
            mirror_id=mirror_id,
            kind=kind,
            path=path[:500],
            problem=problem[:500],
            action=action,
            resolved_at=resolved,
        )
    )


# --- Published indexes against what is stored ----------------------------------------------


def _check_index_entries(channel: Channel | None, report: VerifyReport, changes: _Changes) -> None:
    """Withdraw stored files that are not the file their package's index entry describes."""
    rows = Package.objects.filter(artifact__isnull=False)
    if channel is not None:
        rows = rows.filter(channel=channel)
    other_digest = ~Q(sha256="") & ~Q(artifact__sha256=Lower("sha256"))
    other_size = Q(size__isnull=False) & ~Q(artifact__size=F("size"))
    wrong = rows.filter(other_digest | other_size).select_related("channel", "artifact")
    for package in wrong.iterator(PAGE):
        stored = package.artifact
        problem = (
            f"stored file does not match its index entry: stored sha256 {stored.sha256} "
            f"({stored.size} bytes), index sha256 {package.sha256 or '-'} "
            f"({package.size if package.size is not None else '-'} bytes)"
        )
        logger.warning("verification: %s: %s", package, problem)
        with transaction.atomic():
            _withdraw_package(package, problem, report, changes)


# --- Repairs, publishing, resolution ---------------------------------------------------------


def _open_problems(channel: Channel | None) -> QuerySet[VerificationProblem]:
    rows = VerificationProblem.objects.filter(resolved_at__isnull=True)
    return rows if channel is None else rows.filter(channel=channel)


def _withdrawn_package(problem: VerificationProblem) -> Package | None:
    """The package an open package problem is about, while it still lacks its file (and is
    still wanted: an excluded or deleted package needs no file)."""
    unit, _, filename = problem.path.rpartition("/")
    return Package.objects.filter(
        channel_id=problem.channel_id,
        unit=unit,
        filename=filename,
        artifact__isnull=True,
        on_demand=False,
        excluded_reason="",
    ).first()


def _refetch_withdrawn(channel: Channel | None, changes: _Changes) -> None:
    """Download every withdrawn active file again (new problems and earlier ones)."""
    problems = _open_problems(channel).filter(kind=VerificationProblem.Kind.PACKAGE)
    client = UpstreamClient()
    try:
        for problem in problems.select_related("channel"):
            package = _withdrawn_package(problem)
            if package is not None and package.upstream_url:
                _refetch(client, package, problem)
                changes.publish.add(package.channel_id)
    finally:
        client.close()


def _refetch(client: UpstreamClient, package: Package, problem: VerificationProblem) -> None:
    """Store the package's file again from upstream, verified against its index entry."""
    digest = package.sha256.lower()
    stored = Artifact.objects.filter(sha256=digest).first() if digest else None
    if stored is None:
        fmt = get_format(problem.channel.kind)
        try:
            sha256, size = storage.download(
                client,
                package.upstream_url,
                sha256=package.sha256 or None,
                md5=package.md5 or None,
                size=package.size,
                every_digest=fmt.capabilities.checks_every_digest,
            )
        except (UpstreamError, storage.IntegrityError) as exc:
            reason = scrub(str(exc), package.upstream_url)
            logger.warning("verification: fetching %s again failed: %s", package, reason)
            VerificationProblem.objects.filter(pk=problem.pk).update(
                action=f"{ACTIVE_ACTION}; fetching it again failed: {reason}"[:500]
            )
            return
        stored = storage.artifact_for(sha256, size)
    Package.objects.filter(pk=package.pk, artifact__isnull=True).update(
        artifact=stored, error="", updated_at=timezone.now()
    )
    Channel.objects.filter(pk=package.channel_id).update(content_version=F("content_version") + 1)
    VerificationProblem.objects.filter(pk=problem.pk).update(action="fetched again from the source")


def _publish(channel: Channel | None, changes: _Changes) -> int:
    """Publish the channels whose packages changed; re-render every index file of those that
    lost one (now, or earlier while frozen). Return how many index problems that fixed."""
    fixed = 0
    earlier = _open_problems(channel).filter(kind=VerificationProblem.Kind.INDEX)
    changes.rerender.update(earlier.values_list("channel_id", flat=True))
    for pk in sorted(changes.publish | changes.rerender):
        target = Channel.objects.filter(pk=pk).first()
        if target is None or target.frozen:
            continue
        try:
            channel_publish(channel=target, force=pk in changes.rerender)
        except Exception:
            logger.exception("verification: publishing %s failed", target)
            continue
        if pk in changes.rerender:
            # Every index file the channel has now was rendered anew.
            fixed += (
                _open_problems(target)
                .filter(kind=VerificationProblem.Kind.INDEX)
                .update(resolved_at=timezone.now(), action=INDEX_ACTION)
            )
    return fixed


def _resolve_fixed(channel: Channel | None) -> int:
    """Close package problems whose package is stored again, passive, or gone; return how
    many problems this closed (index problems are closed where they are re-rendered)."""
    fixed = []
    problems = _open_problems(channel).filter(kind=VerificationProblem.Kind.PACKAGE)
    for problem in problems.iterator(PAGE):
        if _withdrawn_package(problem) is None:
            fixed.append(problem.pk)
    return VerificationProblem.objects.filter(pk__in=fixed).update(resolved_at=timezone.now())

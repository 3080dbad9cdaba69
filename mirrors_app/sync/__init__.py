"""The sync orchestrator: fetch → decide → ingest → download → publish for one run.

Every format mirrors in units (a conda subdir, a Python project, CRAN's PACKAGES or one
package's Archive folder), unit by unit: a unit is fetched conditionally, streamed through the
filters into the database, its files downloaded (active mode), and only a unit read to the end
removes what upstream dropped. The channel is published once at the end of a completed or
stopped run; a failed run publishes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from channels_app.formats import FormatError, Rejected, Unchanged, UnitExtras, UnitList
from channels_app.models import BY_MIRROR, Channel, Package
from channels_app.publishing import channel_publish
from channels_app.querysets import has_rows
from psm.http import UpstreamClient, UpstreamError
from psm.redaction import redact, scrub

from ..models import Mirror, MirrorUnit, SyncRun
from .download import download_pending
from .fetch_state import (
    Held,
    document_kept,
    document_path,
    forget_document,
    hold_document,
    keep_document,
    keep_documents,
    kept_documents,
    live_rows_meanwhile,
    save_units,
    unit_states,
)
from .first_load import FirstLoad, drop_abandoned
from .ingest import BatchWriter, KnownRows, Rejections, UnitIngest, rows_of_files
from .not_found import names_not_found, units_not_found
from .policy import RowDecisions, packages_decide, policy_fingerprint
from .prefetch import fetch_ahead
from .progress import Progress, RunAbandoned, StopRequested

logger = logging.getLogger(__name__)
State = SyncRun.State
TICK = 1000


def run_sync(run: SyncRun) -> str:
    """Carry out a claimed (running) run to its end and return its final state.

    A run the stale sweep failed meanwhile (or that was deleted) stops without publishing or
    recording anything. A lost database connection fails the run with that reason, recorded
    on a new connection, at once rather than when the sweep finds it silent.
    """
    mirror = run.mirror
    progress = Progress(run)
    client = UpstreamClient()
    error, warnings = "", ""
    try:
        warnings = "\n".join(_sync_units(run, mirror, client, progress))
    except RunAbandoned:
        return _abandoned(run)
    except StopRequested:
        final = State.STOPPED
    except (UpstreamError, FormatError) as exc:
        final, error = State.FAILED, str(exc)
    except (OperationalError, InterfaceError) as exc:
        logger.exception("run %s of mirror %s lost its database connection", run.pk, mirror.pk)
        final, error = State.FAILED, f"The database connection was lost: {_first_line(exc)}"
        connection.close()  # the next query connects again
    except Exception as exc:  # a bug must still end the run, not leave it running
        logger.exception("run %s of mirror %s crashed", run.pk, mirror.pk)
        final, error = State.FAILED, f"Internal error: {exc.__class__.__name__}: {exc}"
    else:
        final = State.COMPLETED
    finally:
        client.close()
    try:
        final = _publish(mirror, progress, final)
    except RunAbandoned:
        return _abandoned(run)
    # Errors quote URLs; a token in the source's path must not reach the run's record.
    error, warnings = scrub(error, mirror.source_url), scrub(warnings, mirror.source_url)
    _record_end(run, final, error, warnings)
    logger.info("run %s of mirror %s ended %s %s", run.pk, mirror.pk, final, error or warnings)
    return final


def _abandoned(run: SyncRun) -> str:
    """The state of a run taken from this worker: as the sweep recorded it, or stopped if it
    was deleted (with its mirror, or on its own)."""
    state = SyncRun.objects.filter(pk=run.pk).values_list("state", flat=True).first()
    logger.warning("run %s ended elsewhere (%s): not published", run.pk, state or "deleted")
    return state or State.STOPPED


def _publish(mirror: Mirror, progress: Progress, final: str) -> str:
    """Publish what a completed or stopped run brought (a failed one publishes nothing);
    return the final state (a Stop asked meanwhile makes a completed run stopped)."""
    if final != State.FAILED:
        try:
            progress.step("publishing")
        except RunAbandoned:
            raise
        except StopRequested:
            final = State.STOPPED if final == State.COMPLETED else final
        channel_publish(channel=mirror.channel)
    if final != State.STOPPED:
        try:
            progress.step("done")
        except RunAbandoned:
            raise
        except StopRequested:
            final = State.STOPPED if final == State.COMPLETED else final
        except (OperationalError, InterfaceError):
            connection.close()  # recorded below, on a new connection
    return final


def _record_end(run: SyncRun, final: str, error: str, warnings: str) -> None:
    """Record how the run ended, on a new connection if the one it had was lost."""
    from ..services import sync_run_finish

    for attempt in range(3):
        try:
            sync_run_finish(run=run, state=final, error=error, warnings=warnings)
            return
        except (OperationalError, InterfaceError):
            if attempt == 2:
                raise
            logger.warning("run %s: recording its end failed; connecting again", run.pk)
            connection.close()
            time.sleep(attempt + 1)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _sync_units(
    run: SyncRun, mirror: Mirror, client: UpstreamClient, progress: Progress
) -> list[str]:
    """Sync every unit; return the warnings: units that could not be read, units the source
    lacks (unless only guessed) and names of the options the source's index lacks.

    One unreadable or missing unit (malformed index, upstream error, 404) does not stop the
    others; if nothing at all can be read (every unit unreadable or missing, or none listed),
    the run fails.
    """
    fmt = mirror.format
    restart = run.trigger == SyncRun.Trigger.RESTART
    progress.step("listing the source's index")
    # The serial of every unit read before (PyPI has 600,000 projects: plain values, streamed).
    units_read = MirrorUnit.objects.filter(mirror=mirror)
    stored = dict(units_read.values_list("name", "serial").iterator(10_000))
    documents = {} if restart else kept_documents(mirror, len(stored))
    listed = fmt.list_units(client, mirror.source_url, mirror.options, documents)
    # None: the listing is unchanged (a 304), so it lists what the last complete run read.
    reused = listed is None
    listed = stored if listed is None else listed
    if not listed:
        raise FormatError(redact(mirror.source_url), "the source lists nothing to mirror")
    guessed = listed.guessed if isinstance(listed, UnitList) else frozenset()
    stale = [] if reused else [unit for unit in stored if unit not in listed]
    serials = {} if restart else stored
    units = sorted(listed)
    shared = _channel_shared(mirror)
    problems = []
    rejections = Rejections(mirror)
    # A reused listing: nothing was delisted since then.
    unlisted = fmt.capabilities.drops_unlisted_units and not reused
    changed = _drop_unlisted(mirror, set(units), rejections) if unlisted else 0
    finished = forgotten = False
    unread: set[str] = set()  # units unreadable or not in the source
    absent: list[tuple[str, str]] = []  # (unit, URL) not in the source
    done: list[MirrorUnit] = []
    todo = []
    for unit in units:
        serial = listed[unit]
        if unit in serials and serial is not None and serials[unit] == serial:
            continue  # upstream says the unit did not change: no request at all
        todo.append((unit, serial))
    todo = unit_states(units_read, todo, serials)
    progress.units_total = len(todo)
    del serials, listed
    # Units share their database writes (a Python project is a few rows), so a unit is done
    # once the writer has written it.
    writer = BatchWriter(mirror, progress)
    known = KnownRows(mirror.pk, [unit for unit, _, _ in todo])
    if writer.initial_exclusion and known.empty:
        # A first load: each row decided as it is read, or (a decision that needs files
        # together) staged and decided once all were read (see first_load).
        writer.decisions = RowDecisions.for_mirror(mirror)
        if connection.vendor == "postgresql":
            if writer.decisions is None:
                writer.stage = FirstLoad.begin(mirror)
            else:
                drop_abandoned(mirror.pk)  # the stages killed workers left, as a stage does
    # A first load's units read to the end, kept once their rows land (plain values: a
    # Python index has hundreds of thousands).
    landing: list[tuple[str, dict, int | None]] = []
    decided = False
    # Units read to the end whose document is held to be kept once their rows are written:
    # unit -> (URL, live rows, sum of their digests).
    held: dict[str, Held] = {}

    def save_done(*, wait: bool = False) -> None:
        """Keep the units done once their rows are written: in the writing thread, while
        reading goes on (`wait`: before returning)."""
        if not Mirror.objects.filter(pk=mirror.pk).exists():
            writer.discard()  # the mirror was deleted meanwhile: nothing to write or resume
            done.clear()
            return
        units = done[:]
        done.clear()
        if writer.stage is not None:
            landing.extend((u.name, u.validators, u.serial) for u in units)
        else:
            # `writer.failed` only grows in the writing thread until the run's end.
            writer.then(lambda: save_units([u for u in units if u.name not in writer.failed]))
        if wait:
            writer.flush()
        for unit, reason in dict(writer.failed).items():
            if unit not in unread:
                problems.append(f"{unit}: {reason}")
                unread.add(unit)
                progress.fail(f"index unreadable: {unit}")

    try:
        compares = fmt.capabilities.keeps_last_document and not shared and not restart
        last = (lambda unit: document_path(mirror.pk, unit)) if compares else None
        # The live rows of a unit whose document downloads anew, asked meanwhile (not inside
        # a transaction: another connection would not see its rows).
        live: dict[str, Callable[[], tuple[int, int]]] = {}

        def begun(unit: str) -> None:
            live[unit] = live_rows_meanwhile(mirror.pk, unit)

        asks = begun if compares and not connection.in_atomic_block else None
        fetches = fetch_ahead(mirror, client, todo, progress, last, asks)
        for (unit, state, serial), fetching in fetches:
            try:
                fetched, index = fetching()
                ingest_args = (rejections, shared, writer, known, held, live)
                try:
                    with index:
                        rows, validators = _ingest_unit(
                            mirror, unit, progress, fetched, index, *ingest_args,
                            compare=not restart,
                        )  # fmt: skip
                except _WholeNeeded:  # a patch that cannot be applied: the whole document
                    logger.info(
                        "mirror %s, %s: the log's patches do not apply to the stored rows; "
                        "the document is read whole",
                        mirror.pk,
                        unit,
                    )
                    index = mirror.format.unit_buffer()
                    with index:
                        fetched = mirror.format.fetch_unit(
                            client, mirror.source_url, unit, index, {}
                        )
                        rows, validators = _ingest_unit(
                            mirror, unit, progress, fetched, index, *ingest_args,
                            compare=not restart,
                        )  # fmt: skip
            except (UpstreamError, FormatError, DatabaseError) as exc:
                # DatabaseError: a record the database refuses must not sink the other units;
                # a lost connection ends the run (nothing more can be written).
                if isinstance(exc, OperationalError | InterfaceError):
                    raise
                problem = scrub(f"{unit}: {exc}", mirror.source_url)  # errors quote URLs
                logger.warning("mirror %s: %s", mirror.pk, problem)
                problems.append(problem)
                unread.add(unit)
                progress.fail(f"index unreadable: {unit}")
                progress.units_done += 1
                continue
            progress.units_done += 1
            if fetched.status == "missing":
                unread.add(unit)
                absent.append((unit, fetched.url))
            changed += rows
            kept = serial if fetched.serial_kept else None  # None: asked again next run
            if validators is not None and (
                state is None or (state.validators, state.serial) != (validators, kept)
            ):
                # Only once read to the end: a unit read halfway is fetched in full next time.
                done.append(
                    MirrorUnit(mirror=mirror, name=unit, validators=validators, serial=kept)
                )
                if len(done) >= 500:
                    save_done()
            elif validators is None:
                forgotten = True  # missing upstream: no longer one of the units kept
        finished = True
    finally:
        written = False
        try:
            try:
                save_done(wait=True)  # a stopped run resumes after what it finished
            finally:
                writer.close()
            written = True
        finally:
            try:
                if writer.stage is not None:  # kept (decided or pending), dropped, on any exit
                    # Decided as `_apply_policy` would: once every unit was read (or unreadable).
                    decide = finished and written and unread != set(units)
                    landing = [u for u in landing if u[0] not in writer.failed]
                    decided = _land_first_load(
                        writer.stage, mirror, progress, landing, decide=decide
                    )
                elif writer.decisions is not None:
                    decide = finished and written and unread != set(units)
                    decided = _decided_as_read(writer, mirror, progress, decide=decide)
            finally:
                # The listing's validators vouch for the units kept: only once all were read.
                whole = finished and not forgotten and not problems
                keep_documents(mirror, documents if whole else {}, stale, len(units))
    # Every row written (and landed): the documents held are what the units' rows now are.
    for unit, kept in held.items():
        if unit in writer.failed:
            forget_document(mirror.pk, unit)
        else:
            keep_document(mirror.pk, unit, kept)
    if unread == set(units):
        reasons = "; ".join(problems + units_not_found(absent))
        raise FormatError(redact(mirror.source_url), f"nothing could be read: {reasons}")
    problems += units_not_found([(unit, url) for unit, url in absent if unit not in guessed])
    if not problems:  # with a unit unread, its names may be there: not worth a warning
        problems += names_not_found(mirror)
    if not decided:
        _apply_policy(mirror, progress, changed=changed, restart=restart)
    if mirror.mode == Mirror.Mode.ACTIVE:
        # One pass over every file still to store, those of unchanged units included: a
        # download that failed (or a run that stopped) is retried by the next run.
        download_pending(mirror, client, progress)
    return problems


def _land_first_load(
    stage: FirstLoad,
    mirror: Mirror,
    progress: Progress,
    units: list[tuple[str, dict, int | None]],
    *,
    decide: bool,
) -> bool:
    """Move a first load's staged rows into the package table, decided (`decide`: the work of
    `_apply_policy`) or pending (a run that stops or fails: the next run decides them), then
    keep the units read to the end; return whether the rows were decided. Should the move
    fail, nothing is kept (the units neither): the next run loads them again."""
    if not decide:
        stage.land(decide=False)
        _save_landed(mirror, units)
        return False
    fingerprint = policy_fingerprint(mirror)
    try:
        progress.step("applying the policy")
    except (StopRequested, RunAbandoned):
        stage.land(decide=False)
        _save_landed(mirror, units)
        raise
    change = stage.land(decide=True)
    _save_landed(mirror, units)
    Mirror.objects.filter(pk=mirror.pk).update(policy_fingerprint=fingerprint)
    mirror.policy_fingerprint = fingerprint
    for reason, count in change.newly_excluded.items():
        progress.filtered += count
        progress.reasons[reason] += count
    return True


def _decided_as_read(
    writer: BatchWriter, mirror: Mirror, progress: Progress, *, decide: bool
) -> bool:
    """Count on the run the files a first load kept out as it read them; return whether
    every row holds its decision (`decide`: the run read what it could), as `_apply_policy`
    would leave them: then the mirror's fingerprint is that of the decisions."""
    for reason, count in writer.excluded.items():
        progress.filtered += count
        progress.reasons[reason] += count
    decisions = writer.decisions
    assert decisions is not None
    if not (decide and decisions.complete):
        return False  # rows written undecided (or a run that stopped): decided later
    Mirror.objects.filter(pk=mirror.pk).update(policy_fingerprint=decisions.fingerprint)
    mirror.policy_fingerprint = decisions.fingerprint
    return True


def _save_landed(mirror: Mirror, units: list[tuple[str, dict, int | None]]) -> None:
    for start in range(0, len(units), 1000):
        save_units(
            [
                MirrorUnit(mirror=mirror, name=name, validators=validators, serial=serial)
                for name, validators, serial in units[start : start + 1000]
            ]
        )


def _drop_unlisted(mirror: Mirror, listed: set[str], rejections: Rejections) -> int:
    """Mark removed the packages of units the source no longer lists (a project deleted
    upstream, or no longer in the mirror's project list); return how many. An empty listing
    is taken for a broken source, not for "delete everything"."""
    if not listed:
        return 0
    table = Package._meta.db_table
    with connection.cursor() as cursor:
        # One pass over the mirror's rows (by the (mirror, unit) index), once per run.
        cursor.execute(
            f"SELECT DISTINCT unit FROM {table} WHERE mirror_id = %s AND NOT removed",
            [mirror.pk],
        )
        gone = sorted({unit for (unit,) in cursor.fetchall()} - listed)
    rejections.drop(sorted(rejections.units - listed))
    removed = 0
    for start in range(0, len(gone), 1000):
        chunk = gone[start : start + 1000]
        with transaction.atomic():
            removed += Package.objects.filter(mirror=mirror, unit__in=chunk, removed=False).update(
                removed=True, updated_at=timezone.now()
            )
            MirrorUnit.objects.filter(mirror=mirror, name__in=chunk).delete()
            Channel.objects.filter(pk=mirror.channel_id).update(
                content_version=F("content_version") + 1
            )
    return removed


def _apply_policy(mirror: Mirror, progress: Progress, *, changed: int, restart: bool) -> None:
    """Decide again what changed records, a changed policy or new CVE data affect; count on
    the run what this decision newly keeps out (what was kept out before is the mirror's
    state, shown apart from the run)."""
    fingerprint = policy_fingerprint(mirror)
    if not (changed or restart or mirror.policy_fingerprint != fingerprint):
        return
    progress.step("applying the policy")
    change = packages_decide(mirror=mirror, count_allowed=False)
    mirror.policy_fingerprint = fingerprint
    Mirror.objects.filter(pk=mirror.pk).update(policy_fingerprint=mirror.policy_fingerprint)
    for reason, count in change.newly_excluded.items():
        progress.filtered += count
        progress.reasons[reason] += count


def _ingest_unit(
    mirror: Mirror,
    unit: str,
    progress: Progress,
    fetched,
    index,
    rejections: Rejections,
    shared: bool,
    writer: BatchWriter,
    known: KnownRows,
    held: dict[str, Held],
    live: dict[str, Callable[[], tuple[int, int]]],
    *,
    compare: bool,
) -> tuple[int, dict | None]:
    """Bring one fetched unit in line with upstream; return how many rows changed and the
    validators to send next time (None: the unit is not in the source, forget it).

    Where the format keeps a unit's last document (and no other mirror's rows share the
    channel), the one kept is compared with if the rows still match it (`compare`: not on a
    restart), and the one read is held in `held`, to be kept once written. A unit fetched as
    a patch is applied if the rows are the document it starts from (the stamp says so), else
    `_WholeNeeded` is raised before anything changes."""
    fmt = mirror.format
    live_rows = live.pop(unit, None)  # asked as its document downloaded
    if fetched.status == "missing":
        progress.step(f"{unit}: not in the source", now=False)
        rejections.replace(unit, [])
        # Remembered as missing (its validators kept) only if the format keeps its serial.
        return 0, fetched.validators if fetched.serial_kept else None
    if fetched.status == "unchanged":
        return 0, fetched.validators
    keeps = fmt.capabilities.keeps_last_document and not shared
    kept = document_kept(mirror.pk, unit, live_rows) if keeps and compare else None
    if kept is not None and not kept.read_from(fetched.url):
        kept = None
    patch = None
    if fetched.status == "patched":
        if kept is not None and kept.nominal is not None:
            patch = fmt.read_patched(
                index, fetched.url, kept.base_url, lambda keys: _stored_entries(mirror, unit, keys)
            )
        if patch is None or kept is None or patch.origin != kept.nominal:
            raise _WholeNeeded(unit)  # nothing was changed
        changes = len(patch.entries)
        progress.step(
            f"{unit}: reading the {changes} entries its log of patches changed", now=False
        )
    if keeps:
        forget_document(mirror.pk, unit)  # the rows change from here on
    ingest = UnitIngest(
        mirror, unit, progress, shared=shared, writer=writer, known=known, kept=kept
    )
    extras: UnitExtras | None = None
    rejected: list[tuple[str, str]] = []
    if patch is not None:
        assert kept is not None
        items = fmt.parse_patched(patch, fetched.url, unit, ingest, kept.base_url)
    else:
        items = fmt.parse_unit(index, fetched.url, unit, ingest)
    seen = 0  # counted on the run (a clock read, maybe a flush) every TICK entries
    for item in items:
        if isinstance(item, Unchanged):
            seen += item.count - 1
        elif isinstance(item, Rejected):
            rejected.append((item.filename, item.reason))
        elif isinstance(item, UnitExtras):
            extras = item
            continue
        elif not ingest.add(item):
            rejected.append((item.filename, "provided by another mirror of the channel"))
        seen += 1
        if seen >= TICK:
            progress.seen += seen
            progress.tick(seen)
            seen = 0
    progress.seen += seen
    progress.tick(seen)
    ingest.finish()
    for _, reason in rejected:
        progress.exclude(reason)
    rejections.replace(unit, rejected)
    validators = fetched.validators
    if patch is None:  # a patch leaves the document's extras as they were
        _keep_extras(mirror, unit, extras.extras if extras else {})
    rows, digests = ingest.live_rows, ingest.live_digests
    if keeps and not rejected and patch is not None:
        assert kept is not None
        held[unit] = Held(fetched.url, rows, digests, patch.result, kept.base_url, False)
    elif keeps and not rejected and hold_document(mirror.pk, unit, index):
        state = validators.get("jlap")
        nominal = state.get("have") if isinstance(state, dict) else None
        base = extras.base_url if extras else None
        held[unit] = Held(fetched.url, rows, digests, nominal, base, True)
    else:  # rows not stamped: the next read fetches the document, not a patch to it
        validators = {key: value for key, value in validators.items() if key != "jlap"}
    return ingest.changed, validators


def _channel_shared(mirror: Mirror) -> bool:
    """Whether rows not this mirror's are in its channel: another mirror's, or those of none
    (uploads, a deleted mirror's). Two index probes, where asking for rows of the channel
    not this mirror's reads every row of the channel when there are none."""
    if Package.objects.filter(channel_id=mirror.channel_id, mirror__isnull=True).exists():
        return True
    # A mirror's rows are in its channel: probed by mirror alone, on its index.
    others = list(
        Mirror.objects.filter(channel_id=mirror.channel_id)
        .exclude(pk=mirror.pk)
        .values_list("pk", flat=True)
    )
    return any(has_rows(Package.objects.filter(mirror_id=pk), *BY_MIRROR) for pk in others)


class _WholeNeeded(Exception):
    """A unit fetched as a patch that cannot be applied to its rows: fetch it whole."""


def _stored_entries(
    mirror: Mirror, unit: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(section, file name) -> the live row's stored entry and upstream URL, of these keys."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    for section, filename in keys:
        by_name.setdefault(filename, []).append((section, filename))
    columns = ("filename", "record", "upstream_url", "removed")
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for filename, record, upstream_url, removed in rows_of_files(
        mirror, unit, list(by_name), columns
    ):
        if not removed:
            found.update((key, (record, upstream_url)) for key in by_name[filename])
    return found


def _keep_extras(mirror: Mirror, unit: str, extras: dict) -> None:
    """Store the unit's index-level metadata (conda's `removed`) for publishing."""
    if not extras and not mirror.format.capabilities.lists_empty_units:
        return  # nothing to keep (and one row lock per Python project would add up)
    with transaction.atomic():
        channel = Channel.objects.select_for_update().get(pk=mirror.channel_id)
        units = channel.index_extras.get(str(mirror.pk), {})
        if units.get(unit) == extras:
            return
        channel.index_extras[str(mirror.pk)] = {**units, unit: extras}
        Channel.objects.filter(pk=channel.pk).update(
            index_extras=channel.index_extras,
            content_version=F("content_version") + 1,
        )

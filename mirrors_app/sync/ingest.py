"""Bring a channel's packages from one mirror and unit in line with the upstream index.

Only what changed is written: each stored record carries a 64-bit digest, and a record whose
digest is unchanged costs nothing. Writes go in batches (PostgreSQL: binary COPY into a
staging table, then one INSERT ... ON CONFLICT), packages gone upstream are marked removed
(publishing drops them), and every batch bumps the channel's content version so publishing
knows it is behind. A run's units share one `BatchWriter` and one `KnownRows`, so a batch
holds many small units (Python projects): a few statements per 5,000 rows instead of a
transaction per project.

On PostgreSQL, outside a transaction, the batches are written by a thread on its own
connection while the run reads on (the database works on one core while Python parses on the
other), their removals on a connection of their own beside the rows, and rows of files the
mirror never stored are COPied straight into the table (no staging table, no ON CONFLICT)
unless another writer took one of them meanwhile. A first load whose files wait for a
decision has them decided as they are queued (`decisions`) or staged (`stage`, see
`first_load`).
"""

from __future__ import annotations

import datetime as dt
import functools
import queue
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Count, F
from django.utils import timezone

from channels_app.formats import PackageRecord
from channels_app.models import BY_MIRROR, PENDING_DECISION, Channel, Package
from channels_app.querysets import has_rows
from psm.input import storable_text
from psm.own_connection import on_own_connection

from ..models import Mirror, MirrorRejection
from .fetch_state import KeptDocument
from .policy import decides_anything
from .progress import Progress

if TYPE_CHECKING:
    from .first_load import FirstLoad
    from .policy import RowDecisions

BATCH_SIZE = 5000
COPY_FROM = 500  # smaller batches (a Python project's files) are one plain INSERT
PENDING = PENDING_DECISION
#: Columns a sync writes; the rest (id, artifact) are kept or defaulted.
COLUMNS = (
    "channel_id",
    "mirror_id",
    "unit",
    "filename",
    "name",
    "version",
    "sha256",
    "md5",
    "size",
    "upstream_url",
    "record",
    "entry_digest",
    "on_demand",
    "removed",
    "error",
    "excluded_reason",
    "would_exclude_reason",
    "added_at",
    "updated_at",
)
#: Where a queued row (COLUMNS but the two timestamps) holds its decision.
_EXCLUDED = COLUMNS.index("excluded_reason")
#: Columns an upsert refreshes on an existing row (not channel, unit, filename, added_at).
UPDATED = tuple(c for c in COLUMNS if c not in ("channel_id", "unit", "filename", "added_at"))
#: Batches handed to the writing thread and not yet written, at most (bounds memory).
QUEUED = 2


class Known(NamedTuple):
    id: int
    entry_digest: int
    removed: bool


class BatchWriter:
    """Upserts and removals of one mirror's units, written together in batches.

    One statement writes rows of many units; if the database refuses a batch (a value it cannot
    store), each unit is written alone and the units that still fail are kept in `failed`
    (unit -> reason) with nothing of theirs written, so the others still arrive.

    Rows are queued without their timestamps: a batch gets the time it is written. `flush`
    returns once everything queued is written; call `close` when the run ends.
    """

    def __init__(self, mirror: Mirror, progress: Progress, stage: FirstLoad | None = None) -> None:
        self.mirror, self.progress = mirror, progress
        # A first load's rows go to its stage, to enter the package table once decided,
        # or are decided as they are queued (`decisions`, when each file is decided alone).
        self.stage = stage
        self.decisions: RowDecisions | None = None
        #: The `excluded_reason`s of the decided rows written, counted (by the writing thread).
        self.excluded: Counter[str] = Counter()
        self._unit = ""  # the unit whose rows are being decided
        self._stamp: dt.datetime | None = None  # the time the queued rows are written with
        self._day: dt.date | None = None  # its UTC day
        # With filters, a policy or malicious-package advisories to apply, new and changed
        # records wait for the run's decision before anyone sees them (decided once per run).
        self.initial_exclusion = PENDING if decides_anything(mirror) else ""
        self.rows: dict[tuple[str, str], tuple] = {}
        self.new: set[tuple[str, str]] = set()  # of `rows`: files the mirror never stored
        self.gone: dict[str, list[int]] = defaultdict(list)
        self.gone_count = 0
        self.failed: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(QUEUED)
        self._error: BaseException | None = None
        # The writing thread's removals under way on a connection of their own: their wait.
        self._removing: Callable[[], None] | None = None

    def verdict(
        self, unit: str, filename: str, version: str, record: str, parsed: Mapping | None = None
    ) -> tuple[str, str]:
        """The `excluded_reason` and `would_exclude_reason` to queue a new or changed row with:
        without `decisions`, `initial_exclusion` and none; with them, the file's decision (a
        unit's rows come together and `unit_read` follows them; `parsed`: the record as a
        dict, if at hand). Asked before the row is made, so the row is made once."""
        if self.decisions is None:
            return self.initial_exclusion, ""
        if unit != self._unit:  # (a unit not read to the end has no `unit_read`)
            self.decisions.unit_read()
            self._unit = unit
        return self.decisions.decide(unit, filename, version, record, self._first_seen(), parsed)

    def add(self, unit: str, filename: str, row: tuple, *, new: bool = False) -> None:
        """Queue a row (COLUMNS but the two timestamps, its last two its `verdict`); `new`: the
        mirror has no row of this file (nor, as far as the caller knows, does anyone else in
        the channel)."""
        key = (unit, filename)
        self.rows[key] = row
        if new:
            self.new.add(key)
        else:
            self.new.discard(key)
        if len(self.rows) >= BATCH_SIZE:
            self._hand_over()

    def unit_read(self) -> None:
        """The current unit's rows were all added."""
        if self.decisions is not None:
            self.decisions.unit_read()
            self._unit = ""

    def _first_seen(self) -> dt.date:
        """The UTC day of the time the queued rows will be written with (their `added_at`)."""
        if self._stamp is None:
            self._stamp = timezone.now()
            self._day = self._stamp.astimezone(dt.UTC).date()
        assert self._day is not None
        return self._day

    def remove(self, unit: str, ids: Sequence[int], *, at_once: bool = False) -> None:
        """Queue the removal of these rows of the unit; `at_once`: hand what is queued to the
        writer now (the removals are known before the rows read next)."""
        self.gone[unit].extend(ids)
        self.gone_count += len(ids)
        if at_once or self.gone_count >= BATCH_SIZE:
            self._hand_over()

    def discard(self) -> None:
        """Drop what is queued (its mirror is gone)."""
        self._wait(raise_error=False)
        self.rows, self.new, self.gone, self.gone_count = {}, set(), defaultdict(list), 0
        self.failed.clear()

    def flush(self) -> None:
        """Write everything queued; return once it is written."""
        if self._thread is not None or self.rows or self.gone:
            # With a `then`: the writing thread waits for the removals beside the rows too.
            self._hand_over(lambda: None)
        self._wait()

    def then(self, callback: Callable[[], None]) -> None:
        """Hand over everything queued and call `callback` once it is written, in the writing
        thread (or at once without one), without waiting: reading goes on meanwhile."""
        self._hand_over(callback)

    def close(self) -> None:
        """End the writing thread (what it was given is written first)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _hand_over(self, then: Callable[[], None] | None = None) -> None:
        self._raise()
        rows, new, gone = self.rows, self.new, self.gone
        if not rows and not gone and then is None:
            return
        self.rows, self.new, self.gone, self.gone_count = {}, set(), defaultdict(list), 0
        now, self._stamp = self._stamp, None  # None: the time it is written
        if connection.vendor == "postgresql":
            if self._thread is None and not connection.in_atomic_block:
                # (inside a transaction the thread would not see what it sees)
                self._thread = threading.Thread(
                    target=self._run, name=f"writer-{self.mirror.pk}", daemon=True
                )
                self._thread.start()
        if self._thread is None:
            self._write_batch(rows, new, gone, then, now)
        else:
            self._queue.put((rows, new, gone, then, now))

    def _run(self) -> None:
        """The writing thread: batches in order, on this thread's own connection."""
        try:
            with connection.cursor() as cursor:
                # A batch's rows as the package table's insert trigger reads them back (its
                # transition table), held in memory rather than spilled to a file.
                cursor.execute("SET work_mem = '32MB'")
            while (batch := self._queue.get()) is not None:
                try:
                    if self._error is None:
                        self._write_batch(*batch)
                except BaseException as exc:  # re-raised in the run's thread
                    self._error = exc
                finally:
                    self._queue.task_done()
            try:
                self._removed()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the run's thread
                self._error = exc
            self._queue.task_done()
        finally:
            connection.close()

    def _wait(self, *, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._queue.join()
        if raise_error:
            self._raise()
        else:
            self._error = None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write_batch(
        self,
        rows: dict[tuple[str, str], tuple],
        new: set,
        gone: dict[str, list[int]],
        then: Callable[[], None] | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        now = now or timezone.now()
        if any(gone.values()) and self._thread is threading.current_thread():
            # In the writing thread: the removals beside the rows, one at a time.
            self._removed()
            self._removing = self._removal_meanwhile(gone, now)
            gone = {}
        if rows or gone:
            self._write_rows(rows, new, gone, now)
        if then is not None:
            self._removed()  # what was handed over before `then` is written, removals too
            then()

    def _removed(self) -> None:
        """Wait for the removals written beside the rows, if any (`_removal_meanwhile`)."""
        wait, self._removing = self._removing, None
        if wait is not None:
            wait()

    def _copied(self, rows: dict, new: set) -> list[tuple]:
        """The rows of a batch that go in by COPY (to the stage, or files nobody stored)."""
        if self.stage is not None:
            return list(rows.values()) if rows else []
        fresh = [row for key, row in rows.items() if key in new] if new else []
        return fresh if len(fresh) >= COPY_FROM else []

    def _write_rows(
        self,
        rows: dict,
        new: set,
        gone: dict[str, list[int]],
        now: dt.datetime,
    ) -> None:
        try:
            try:
                with transaction.atomic():
                    self._write(rows, new, gone, now)
            except _Taken:  # another writer took one of the new files: upsert them all
                with transaction.atomic():
                    self._write(rows, set(), gone, now)
        except (OperationalError, InterfaceError):
            raise  # the connection is lost: no unit can be written, the run ends
        except DatabaseError as exc:
            self._write_units_alone(rows, gone, _reason(exc), now)
            return
        self._written(rows)

    def _removal_meanwhile(
        self, gone: dict[str, list[int]], now: dt.datetime
    ) -> Callable[[], None]:
        """Start writing removals on a connection of their own, while this thread writes the
        rows that follow (6,000 rows of a conda-forge subdir marked removed cost as much as
        12,000 COPied in): a transaction of their own, whole. The callable returned waits for
        it, and writes unit by unit what it could not write (`_removed`); with no connection
        of their own to be had, the removals are written on this thread's."""

        def remove() -> None:
            with transaction.atomic():
                self._write({}, set(), gone, now)

        removed = on_own_connection(remove, "psm-removals", else_here=remove)

        def wait() -> None:
            try:
                removed()
            except (OperationalError, InterfaceError):
                raise
            except DatabaseError as exc:
                self._write_units_alone({}, gone, _reason(exc), now)

        return wait

    def _write_units_alone(
        self, rows: dict, gone: dict[str, list[int]], reason: str, now: dt.datetime
    ) -> None:
        by_unit: dict[str, dict] = defaultdict(dict)
        for key, row in rows.items():
            by_unit[key[0]][key] = row
        units = by_unit.keys() | gone.keys()
        if len(units) == 1:
            self.failed[next(iter(units))] = reason
            return
        for unit in sorted(units):
            try:
                with transaction.atomic():
                    self._write(by_unit[unit], set(), {unit: gone.get(unit, [])}, now)
            except (OperationalError, InterfaceError):
                raise
            except DatabaseError as exc:
                self.failed[unit] = _reason(exc)
            else:
                self._written(by_unit[unit])

    def _write(
        self,
        rows: dict,
        new: set,
        gone: dict[str, list[int]],
        now: dt.datetime,
    ) -> None:
        """Write a batch with the time `now`."""
        copied = self._copied(rows, new) if connection.vendor == "postgresql" else []
        if rows and self.stage is not None:
            self.stage.write(copied, now)
            if not any(gone.values()):
                return  # the package table is untouched until the stage lands
            rows = {}
        if rows and connection.vendor == "postgresql":
            if copied:  # first, so that a file taken meanwhile undoes nothing else (_Taken)
                _insert_copy(copied, now)
            others = [row for key, row in rows.items() if not (copied and key in new)]
            if others:
                (_upsert_copy if len(others) >= COPY_FROM else _upsert_values)(others, now)
        elif rows:
            _upsert_values(list(rows.values()), now)
        removed = [pk for ids in gone.values() for pk in ids]
        if removed:
            _mark_removed(removed, now)
        Channel.objects.filter(pk=self.mirror.channel_id).update(
            content_version=F("content_version") + 1
        )

    def _written(self, rows: dict[tuple[str, str], tuple]) -> None:
        count = len(rows)
        self.progress.ingested += count
        if self.mirror.mode == Mirror.Mode.PASSIVE:
            self.progress.passive += count
        if self.decisions is not None:
            self.excluded.update(row[_EXCLUDED] for row in rows.values() if row[_EXCLUDED])


class Rejections:
    """The index entries of each unit the mirror could not take in (unsafe, invalid, or a file
    another mirror provides), replaced whenever the unit is read again. Few mirrors have any:
    a unit costs a write only if it has some now or had some before."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.units = set(
            MirrorRejection.objects.filter(mirror=mirror).values_list("unit", flat=True).distinct()
        )

    def replace(self, unit: str, found: list[tuple[str, str]]) -> None:
        """Keep `found` ((filename, reason) of the unit's entries read now) as the unit's."""
        if not found and unit not in self.units:
            return
        now = timezone.now()
        try:
            with transaction.atomic():
                MirrorRejection.objects.filter(mirror=self.mirror, unit=unit).delete()
                MirrorRejection.objects.bulk_create(
                    MirrorRejection(
                        mirror=self.mirror,
                        unit=storable_text(unit)[:255],
                        filename=storable_text(filename)[:255],
                        reason=storable_text(reason)[:300],
                        seen_at=now,
                    )
                    for filename, reason in found
                )
        except IntegrityError:
            return  # the mirror was deleted meanwhile
        (self.units.add if found else self.units.discard)(unit)

    def drop(self, units: Sequence[str]) -> None:
        """Forget the entries of units the source no longer has."""
        gone = [unit for unit in units if unit in self.units]
        for start in range(0, len(gone), 1000):
            MirrorRejection.objects.filter(
                mirror=self.mirror, unit__in=gone[start : start + 1000]
            ).delete()
        self.units.difference_update(gone)


class KnownRows:
    """The stored rows of a mirror's units, read in `units` order a chunk of consecutive
    units at a time: as many as hold about `ROWS` rows (hundreds of Python projects per query,
    one conda platform of hundreds of thousands alone), so memory stays bounded.

    A mirror with no rows yet (a first sync) costs one query in all.
    """

    ROWS = 50_000
    UNITS = 500  # at most, per query

    def __init__(self, mirror_id: int, units: Sequence[str]) -> None:
        self.mirror_id = mirror_id
        self.position = {unit: i for i, unit in enumerate(units)}
        self.units = list(units)
        self.loaded: dict[str, dict[str, Known]] = {}
        self.empty = not has_rows(Package.objects.filter(mirror_id=mirror_id), *BY_MIRROR)

    def of(self, unit: str) -> dict[str, Known]:
        if self.empty:
            return {}
        if unit not in self.loaded:
            start = self.position.get(unit)
            chunk = [unit] if start is None else self._chunk(start)
            self.loaded = {u: {} for u in chunk}
            for row_unit, filename, known in _known_rows(self.mirror_id, chunk):
                self.loaded[row_unit][filename] = known
        return self.loaded.pop(unit)

    def _chunk(self, start: int) -> list[str]:
        """The units from `start` on whose rows add up to at most `ROWS` (one at least)."""
        window = self.units[start : start + self.UNITS]
        sizes = dict(
            Package.objects.filter(mirror_id=self.mirror_id, unit__in=window)
            .values_list("unit")
            .annotate(n=Count("pk"))
            .order_by()
        )
        chunk, rows = [], 0
        for unit in window:
            rows += sizes.get(unit, 0)
            if chunk and rows > self.ROWS:
                break
            chunk.append(unit)
        return chunk


class UnitIngest:
    """Diff one unit (a conda subdir) of one mirror against the database, writing in batches.

    Call `add` for every allowed record, then `finish` once the whole index was read; a run that
    stops before `finish` keeps what it wrote and removes only what the index said is gone
    (`only`'s `gone`), not what it merely did not reach. It is the `StoredEntries` the
    format's `parse_unit` asks which entries are current. The writes happen when the
    run's shared `writer` flushes (the caller flushes it before relying on them).
    """

    def __init__(
        self,
        mirror: Mirror,
        unit: str,
        progress: Progress,
        *,
        writer: BatchWriter,
        known: KnownRows,
        shared: bool = True,
        kept: KeptDocument | None = None,
    ) -> None:
        self.mirror, self.unit, self.progress = mirror, unit, progress
        # The unit's last document, which the stored rows match (not with rows of others).
        self.kept = kept if not shared else None
        # What the unit's live rows are once the queued writes land: how many, and the sum
        # of their digests (kept with the document, to know next time that they still match).
        self.live_rows = self.live_digests = 0
        self._known: dict[str, Known] | None = None  # read on first use (see `known`)
        self._known_rows = known
        self.writer = writer
        # Files another mirror (or an upload) already provides in this channel and unit;
        # `shared=False` (the caller checked the channel once) saves a query per unit.
        self.shared = shared
        self._owner = (mirror.channel_id, mirror.pk)
        self._passive = mirror.mode == Mirror.Mode.PASSIVE
        self.taken = (
            set(
                Package.objects.filter(channel_id=mirror.channel_id, unit=unit)
                .exclude(mirror=mirror)
                .values_list("filename", flat=True)
            )
            if shared
            else set()
        )
        self.changed = 0

    @property
    def known(self) -> dict[str, Known]:
        """The unit's stored rows, read when first needed (a format may overlap the read)."""
        if self._known is None:
            self._known = self._known_rows.of(self.unit)
        return self._known

    def current_digests(self) -> dict[str, int]:
        """filename -> digest of the stored rows an unchanged entry would leave as they are."""
        return {
            filename: known.entry_digest
            for filename, known in self.known.items()
            if not known.removed and filename not in self.taken
        }

    def is_current(self, filename: str, digest: int) -> bool:
        """Whether the stored row is this very entry (then it counts as seen, nothing to do)."""
        old = self.known.get(filename)
        if old is None or old.entry_digest != digest or old.removed or filename in self.taken:
            return False
        del self.known[filename]
        self.live_rows += 1
        self.live_digests += digest
        return True

    def kept_document(self) -> str | None:
        return None if self.kept is None else self.kept.path

    def only(self, filenames: Iterable[str], gone: Iterable[str] = ()) -> int:
        """Compare and write only these entries (the others are the kept document's, stored as
        they are): their stored rows are read, no other. The rows of those `gone` are read
        first and handed to the writer as removed at once, so that it removes them while the
        others are read. Returns how many stay as they are."""
        assert self.kept is not None
        self.live_rows, self.live_digests = self.kept.rows, self.kept.digests
        gone = set(gone)
        self._remove((known for _, known in self._stored(gone)), at_once=True)
        self._known = dict(self._stored(name for name in filenames if name not in gone))
        return self.live_rows

    def _stored(self, filenames: Iterable[str]) -> Iterator[tuple[str, Known]]:
        """The stored rows of these files, no longer counted as they are (`only`)."""
        for filename, known in _known_of_files(self.mirror, self.unit, list(filenames)):
            if not known.removed:  # to be rewritten or removed
                self.live_rows -= 1
                self.live_digests -= known.entry_digest
            yield filename, known

    def add(self, record: PackageRecord) -> bool:
        """Queue a new or changed record; False if another mirror provides it."""
        if record.filename in self.taken:
            return False
        stored = self.known.pop(record.filename, None)
        self.changed += 1
        self.live_rows += 1
        self.live_digests += record.entry_digest
        unit, filename, version = self.unit, record.filename, record.version[:100]
        writer = self.writer
        excluded, would_exclude = writer.verdict(
            unit, filename, version, record.document, record.extra
        )
        channel_id, mirror_id = self._owner
        writer.add(
            unit,
            filename,
            (
                channel_id,
                mirror_id,
                unit,
                filename,
                record.name[:255],
                version,
                record.sha256 or "",
                record.md5 or "",
                record.size,
                record.url,
                record.document,
                record.entry_digest,
                self._passive,
                False,
                "",
                excluded,
                would_exclude,
            ),
            new=stored is None and not self.shared,
        )
        return True

    def finish(self) -> None:
        """Queue the removal of what upstream no longer lists (or we no longer allow)."""
        self.writer.unit_read()
        self._remove(self.known.values())
        self._known = {}

    def _remove(self, stored: Iterable[Known], *, at_once: bool = False) -> None:
        """Queue the removal of these stored rows (those not removed already)."""
        ids = [known.id for known in stored if not known.removed]
        if ids:
            self.changed += len(ids)
            self.writer.remove(self.unit, ids, at_once=at_once)


def _reason(exc: DatabaseError) -> str:
    """The database's one-line complaint, e.g. a value it cannot store."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else exc.__class__.__name__
    if "0x00" in line:  # the server's words for it ("invalid byte sequence ... 0x00")
        return "a value holds a NUL (0x00) byte, which PostgreSQL cannot store"
    return line


def _known_rows(mirror_id: int, units: list[str]):
    """(unit, filename, Known) of the units' rows; a plain cursor, as this reads every row of a
    conda-forge-sized subdir (ORM rows cost several times more)."""
    table = Package._meta.db_table
    with connection.cursor() as cursor:
        if len(units) == 1:
            cursor.execute(
                f"SELECT unit, filename, id, entry_digest, removed FROM {table} "
                "WHERE mirror_id = %s AND unit = %s",
                [mirror_id, units[0]],
            )
        else:
            marks = ", ".join(["%s"] * len(units))
            cursor.execute(
                f"SELECT unit, filename, id, entry_digest, removed FROM {table} "
                f"WHERE mirror_id = %s AND unit IN ({marks})",
                [mirror_id, *units],
            )
        while rows := cursor.fetchmany(20_000):
            for unit, filename, pk, digest, removed in rows:
                yield unit, filename, Known(pk, digest, bool(removed))


def _known_of_files(mirror: Mirror, unit: str, filenames: list[str]):
    """(filename, Known) of the mirror's rows of these files in the unit."""
    for filename, pk, digest, removed in rows_of_files(
        mirror, unit, filenames, ("filename", "id", "entry_digest", "removed")
    ):
        yield filename, Known(pk, digest, bool(removed))


def rows_of_files(
    mirror: Mirror, unit: str, filenames: list[str], columns: tuple[str, ...]
) -> Iterator[tuple]:
    """`columns` of the mirror's rows of these files in the unit (a few thousand of a unit's
    hundreds of thousands: a probe each of the channel's unique file index)."""
    if connection.vendor == "postgresql":  # one array each: no statement of 5,000 parameters
        table = Package._meta.db_table
        selected = ", ".join(Package._meta.get_field(c).column for c in columns)
        with connection.cursor() as cursor:
            for start in range(0, len(filenames), 50_000):
                cursor.execute(
                    f"SELECT {selected} FROM {table} "
                    "WHERE channel_id = %s AND unit = %s AND mirror_id = %s "
                    "AND filename = ANY(%s)",
                    [mirror.channel_id, unit, mirror.pk, filenames[start : start + 50_000]],
                )
                yield from cursor.fetchall()
        return
    rows = Package.objects.filter(channel_id=mirror.channel_id, unit=unit, mirror=mirror)
    for start in range(0, len(filenames), 5_000):  # bounded IN lists (SQLite's too)
        chunk = filenames[start : start + 5_000]
        yield from rows.filter(filename__in=chunk).values_list(*columns)


def upsert_updates(table: str) -> str:
    """The SET list of an upsert. A row whose record now describes other bytes (another
    sha256, or another md5 where upstream gives only that, as CRAN does) loses its stored
    file and sidecar, so the next download fetches the file the record describes."""
    other_file = (
        f"{_differs(f'{table}.sha256', 'EXCLUDED.sha256')} "
        f"OR {_differs(f'{table}.md5', 'EXCLUDED.md5')}"
    )
    return ", ".join(
        [f"{c} = EXCLUDED.{c}" for c in UPDATED]
        + [
            f"{c} = CASE WHEN {other_file} THEN NULL ELSE {table}.{c} END"
            for c in ("artifact_id", "sidecar_id")
        ]
    )


def upsert_mine(table: str) -> str:
    """An upsert's condition: a row is updated only by its own mirror's sync (another
    mirror's file of the same name in the channel stays as it is)."""
    return f"WHERE {_differs(f'{table}.mirror_id', 'EXCLUDED.mirror_id', negated=True)}"


def _differs(left: str, right: str, *, negated: bool = False) -> str:
    """NULL-safe comparison: PostgreSQL's IS [NOT] DISTINCT FROM, SQLite's IS [NOT]."""
    if connection.vendor == "postgresql":
        return f"{left} IS {'NOT ' if negated else ''}DISTINCT FROM {right}"
    return f"{left} IS {'' if negated else 'NOT '}{right}"


class _Taken(Exception):
    """A file COPied in as new was stored meanwhile (by another mirror of the channel)."""


def _insert_copy(rows: list[tuple], now) -> None:
    """COPY rows of files nobody stored straight into the table; _Taken if one of them is
    there after all. No savepoint: the caller undoes its transaction and upserts instead."""
    table = Package._meta.db_table
    try:
        # psycopg's own cursor (COPY): its errors made Django's, as the ORM's are.
        with connection.cursor() as cursor, connection.wrap_database_errors:
            with cursor.copy(copy_statement(table)) as copy:
                write_copy(copy, rows, now)
    except IntegrityError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "23505":  # not a unique violation
            raise
        raise _Taken from exc


def copy_statement(table: str) -> str:
    """COPY of COLUMNS into `table`, in PostgreSQL's binary format: the server takes each
    value as it is stored, where the text format parses every one, timestamps most (600,000
    conda rows into the package table: 11.1 s of the server's time against 13.7–14.3 s, and
    less of the writer's, which formatted text lines)."""
    return f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"


@functools.cache
def copy_types() -> tuple[str, ...]:
    """The package table's types of COLUMNS, as a binary COPY names them (no length)."""
    return tuple(
        re.sub(r"\(.*\)$", "", Package._meta.get_field(column).db_type(connection))
        for column in COLUMNS
    )


def write_copy(copy, rows: Sequence[tuple], now) -> None:
    """Send rows (COLUMNS but the two timestamps) to a `copy_statement` COPY, with `now` as
    both timestamps."""
    copy.set_types(copy_types())
    stamp = (now, now)
    for row in rows:
        copy.write_row(row + stamp)


def _mark_removed(ids: list[int], now: dt.datetime) -> None:
    """Mark these rows removed (the next publish drops them). On PostgreSQL the ids are one
    array: 6,000 of them as an `IN` list are a statement of 6,000 parameters to build, send
    and plan (0.33 s against 0.26 s measured)."""
    if connection.vendor != "postgresql":
        Package.objects.filter(pk__in=ids).update(removed=True, updated_at=now)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Package._meta.db_table} SET removed = true, updated_at = %s "
            "WHERE id = ANY(%s)",
            [now, ids],
        )


def _upsert_copy(rows: list[tuple], now) -> None:
    table = Package._meta.db_table
    columns = ", ".join(COLUMNS)
    updates = upsert_updates(table)
    with connection.cursor() as cursor, connection.wrap_database_errors:
        # Dropped first as well: inside an outer transaction (tests) ON COMMIT comes late.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.psm_package_stage")
        cursor.execute(
            f"CREATE TEMP TABLE psm_package_stage ON COMMIT DROP AS "
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        with cursor.copy(copy_statement("psm_package_stage")) as copy:
            write_copy(copy, rows, now)
        # The WHERE keeps a row another mirror brought in meanwhile from changing hands.
        cursor.execute(
            f"INSERT INTO {table} ({columns}, artifact_id) "
            f"SELECT {columns}, NULL FROM psm_package_stage "
            f"ON CONFLICT (channel_id, unit, filename) DO UPDATE SET {updates} "
            f"{upsert_mine(table)}"
        )


def _upsert_values(rows: list[tuple], now) -> None:
    """A small batch as INSERT ... ON CONFLICT (no staging table): one statement, or on
    SQLite one per as many rows as its parameter limit lets in."""
    table = Package._meta.db_table
    columns = ", ".join(COLUMNS)
    updates = upsert_updates(table)
    row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    size = connection.ops.bulk_batch_size(COLUMNS, rows) or 1
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))} "
                f"ON CONFLICT (channel_id, unit, filename) DO UPDATE SET {updates} "
                f"{upsert_mine(table)}",
                [value for values in chunk for value in (*values, now, now)],
            )

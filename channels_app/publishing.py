"""Publish a channel: render its index files once, then swap them in together.

Clients only ever read published files, so they move from one consistent snapshot to the next:
every file an index lists is servable (stored, or a passive file PSM fetches on request), and
packages removed since the last publish stay servable until the publish that drops them.
"""

from __future__ import annotations

import bz2
import io
import logging
import mmap
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import reduce
from itertools import groupby
from operator import itemgetter, or_
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from psm.own_connection import on_own_connection

from . import storage
from .formats import content_type, get_format
from .formats.base import Previous
from .models import BY_FILE, FILE_BYTES, SERVED, Artifact, Channel, Package, PublishedFile
from .querysets import has_rows
from .row_streams import COLUMN, chunked, copied_lines, stream_rows
from .splice_changes import (
    MARK_SPAN,
    SPLICE_LIMIT,
    changes_since,
    forget_gone,
    forget_gone_everywhere,
    orders_by_bytes,
    render_mark,
    told_in_a_row,
)

logger = logging.getLogger(__name__)


class PackageIndexSource:
    """A channel's servable packages, read from the database for a format to render."""

    def __init__(self, channel: Channel, *, splice: bool = False) -> None:
        self.channel = channel
        self.packages = Package.objects.filter(SERVED, channel=channel)
        # A published index may be spliced (PostgreSQL): the marks of what this render reads.
        self.splice = splice and connection.vendor == "postgresql"
        self.marks: dict[str, dict[str, Any]] = {}
        self.spliced: set[str] = set()  # the files rendered by splicing the published ones
        #: Published files found damaged while building on them, by path (`_damage_found`).
        self.damaged: dict[str, storage.DamagedFile] = {}
        self._companions: dict[tuple[str, str], bytes | None] = {}  # `published_with`'s reads
        #: What the format keeps with each file rendered (`render_ended`'s `note`).
        self.notes: dict[str, bytes] = {}

    def render_began(self, path: str) -> None:
        """Note, before any row of the file at `path` is read, what the rows it renders are
        at least as new as (`render_mark`); the publish keeps it with the file."""
        if connection.vendor == "postgresql":
            self.marks[path] = render_mark()

    def render_ended(
        self,
        path: str,
        sections: list[tuple[int, int]],
        *,
        spliced: bool,
        companions: Iterable[str] = (),
        note: bytes | None = None,
    ) -> None:
        """Note where the members of each section of the file at `path` lie (byte offsets),
        for the next publish to splice into, and whether this one was spliced; the publish
        also keeps which `companions` (files it renders with this one) went with it, for the
        next to read (`published_with`), and the format's `note` on the file, for the next
        splice (`previous`)."""
        if spliced:
            self.spliced.add(path)
        if path in self.marks:
            self.marks[path]["sections"] = [list(section) for section in sections]
            self.marks[path]["with"] = list(companions)
            if not spliced:  # a whole render is as good as a check
                self.marks[path]["told"] = 0
            if note is not None:
                self.notes[path] = note

    def previous(
        self,
        path: str,
        unit: str,
        suffixes: tuple[str, ...],
        read_note: Callable[[bytes, list], Any] | None = None,
    ) -> Previous | None:
        """The published file at `path` with the unit's rows changed since it was rendered,
        by section (`suffixes`), if this render may splice them into it (its bytes checked
        meanwhile: `Previous.damage`); None if in any doubt (never marked, rendered on another
        server or long ago, replaced since, missing, too many changes).

        `read_note(note, sections)`: what the format's note on the file (`render_ended`) says
        of its members (None: nothing usable), where the database sorts file names by their
        bytes; given that, told changes come without gaps (`Previous.members`)."""
        mark, now = (self.channel.render_marks or {}).get(path), self.marks.get(path)
        if not self.splice or not isinstance(mark, dict) or now is None:
            return None
        xmin, sections = mark.get("xmin"), mark.get("sections")
        if mark.get("server") != now["server"] or not isinstance(xmin, int):
            return None
        if not 0 < xmin <= now["xmin"] or now["xmin"] - xmin >= MARK_SPAN:
            return None
        if not isinstance(sections, list) or len(sections) != len(suffixes):
            return None
        published = (
            PublishedFile.objects.filter(
                channel=self.channel, path=path, artifact__sha256=mark.get("sha256")
            )
            .select_related("artifact")
            .first()
        )
        if published is None:
            return None
        try:
            with storage.open_artifact(published.artifact) as fileobj:
                data = mmap.mmap(fileobj.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, AttributeError):  # gone, empty, not a local file
            return None
        now["told"] = told = told_in_a_row(mark)
        snapshot = mark["snapshot"] if told else None
        members = None
        if read_note is not None and orders_by_bytes():
            note = read_note_of(mark.get("sha256"))
            members = read_note(note, sections) if note is not None else None
        changes = changes_since(
            self.channel.pk,
            unit,
            xmin,
            suffixes,
            SPLICE_LIMIT,
            snapshot=snapshot,
            # A checked splice drops, with a changed row's gap, a neighbour gone untold (which
            # no merge would know of): it asks for gaps.
            neighbours=members is None or snapshot is None,
        )
        if changes is None:
            data.close()
            return None
        # The splice keeps the file's bytes: checked against its digest while the format
        # works out the splice (a core is free then), before any of them is written.
        damage = storage.damage_later(published.artifact, data)

        def checked() -> str | None:
            problem = damage()
            if problem:
                self._damage_found(path, published.artifact, problem)
            return problem

        return Previous(data, [tuple(section) for section in sections], changes, checked, members)

    def _damage_found(self, path: str, artifact: Artifact, problem: str) -> None:
        """The published file at `path` found damaged: not built on, and its blob deleted at
        once, so that rendering the same bytes again stores them whole; the publish remedies
        the rest after (`_withdraw_damaged_found`)."""
        if path not in self.damaged:
            logger.warning("%s of %s is damaged (%s): not built on", path, self.channel, problem)
            self.damaged[path] = storage.DamagedFile(artifact, problem)
            storage.delete_blob(artifact.sha256)

    def published_with(self, path: str, companion: str) -> bytes | None:
        """The bytes of `companion` as the publish that rendered the file at `path` left it
        (`render_ended`), if it is still the one published; else None. For a render that
        `previous` let splice that file."""
        mark = (self.channel.render_marks or {}).get(path)
        kept = mark.get("with") if isinstance(mark, dict) else None
        sha256 = kept.get(companion) if isinstance(kept, dict) else None
        if not isinstance(sha256, str):
            return None
        if (companion, sha256) not in self._companions:
            published = (
                PublishedFile.objects.filter(
                    channel=self.channel, path=companion, artifact__sha256=sha256
                )
                .select_related("artifact")
                .first()
            )
            data = None
            if published is not None:
                try:
                    data = storage.read_verified(published.artifact)
                except storage.DamagedFile as exc:
                    self._damage_found(companion, exc.artifact, exc.problem)
                except (OSError, ValueError):
                    pass
            self._companions[companion, sha256] = data
        return self._companions[companion, sha256]

    def units(self) -> list[str]:
        listed = set()
        for units in self.channel.index_extras.values():
            listed.update(units)
        folders = get_format(self.channel.kind).capabilities.fixed_units
        if folders:
            # An index probe per possible folder: DISTINCT would sort every package row.
            rows = Package.objects.filter(channel=self.channel)
            listed.update(u for u in folders - listed if has_rows(rows.filter(unit=u), *BY_FILE))
        else:
            # order_by(): else the model's ordering joins the DISTINCT (a row per package).
            listed.update(self.packages.order_by().values_list("unit", flat=True).distinct())
        return sorted(listed)

    def documents(self, unit: str, suffix: str = "") -> Iterable[tuple[str, str | bytes]]:
        rows = self.packages.filter(unit=unit)
        if suffix:
            rows = rows.filter(filename__endswith=suffix)
        rows = rows.order_by("filename").values_list("filename", "record")
        return stream_rows(rows)

    def json_members(
        self, unit: str, suffix: str = "", lines: Callable[[bytes], None] | None = None
    ) -> Iterator[bytes] | None:
        """`documents(unit, suffix)` as the members of a JSON object, `"filename":document`
        comma separated, in blocks of bytes, straight from a COPY (no Python per row; a
        conda-forge-sized subdir is 600,000 rows); `lines` is handed each block first as
        lines (`copied_lines`). None where the database has no COPY (not PostgreSQL): the
        format renders the documents itself."""
        if connection.vendor != "postgresql":
            return None
        rows = self.packages.filter(unit=unit)
        if suffix:
            rows = rows.filter(filename__endswith=suffix)
        member = RawSQL(f"to_json({COLUMN % 'filename'})::text || ':' || {COLUMN % 'record'}", [])
        return copied_lines(
            rows.annotate(member=member).order_by("filename").values_list("member"), b",", lines
        )

    def names(self, unit: str, suffixes: tuple[str, ...] = ()) -> set[str]:
        """The package names of the unit's servable files (ending in one of `suffixes`)."""
        rows = self._files_of(unit, suffixes)
        return set(rows.order_by().values_list("name", flat=True).distinct())

    def served_names(self, unit: str, names: Iterable[str], suffixes: tuple[str, ...]) -> set[str]:
        """Those of `names` that name a servable file of the unit (ending in one of
        `suffixes`): `names` for a few names, each a probe of the served names' index."""
        rows, found = self._files_of(unit, suffixes), set()
        for chunk in chunked(names, 5000):
            found.update(
                rows.filter(name__in=chunk).order_by().values_list("name", flat=True).distinct()
            )
        return found

    def _files_of(self, unit: str, suffixes: tuple[str, ...]):
        rows = self.packages.filter(unit=unit)
        if suffixes:
            rows = rows.filter(reduce(or_, (Q(filename__endswith=s) for s in suffixes)))
        return rows

    def names_later(self, unit: str, suffixes: tuple[str, ...] = ()) -> Callable[[], set[str]]:
        """`names`, asked now on a connection of its own while the caller renders the unit
        (a conda-forge-sized subdir's names take a pass over its rows); the callable returns
        them. Asked when called instead inside a transaction, whose uncommitted rows another
        connection would not see, and outside PostgreSQL."""

        def here() -> set[str]:
            return self.names(unit, suffixes)

        if connection.in_atomic_block or connection.vendor != "postgresql":
            return here
        return on_own_connection(here, "psm-names", else_here=here)

    def grouped_documents(
        self, units: Iterable[str] | None = None
    ) -> Iterator[tuple[str, list[tuple[str, str | bytes]]]]:
        """(unit, its documents) of every unit with servable packages, or of `units`, in unit
        order: one streamed query for many small units instead of one per unit."""
        chunks: Iterable[list[str] | None] = [None] if units is None else chunked(units)
        for chunk in chunks:
            rows = self.packages if chunk is None else self.packages.filter(unit__in=chunk)
            rows = rows.order_by("unit", "filename").values_list("unit", "filename", "record")
            stream = stream_rows(rows)
            for unit, group in groupby(stream, key=itemgetter(0)):
                yield unit, [(filename, record) for _, filename, record in group]

    def files(self, units: Iterable[str]) -> Iterator[tuple[str, str, int | None, datetime]]:
        """(unit, filename, size, added_at) of the servable files of `units`, in order."""
        for chunk in chunked(units):
            rows = (
                self.packages.filter(unit__in=chunk)
                .order_by("unit", "filename")
                .values_list("unit", "filename", FILE_BYTES, "added_at")
            )
            yield from rows.iterator(10_000)

    def unit_extras(self, unit: str) -> dict[str, Any]:
        """The unit's extras of every mirror of the channel: lists joined (conda's `removed`),
        mappings merged with the first mirror's value winning for a key named twice."""
        merged: dict[str, Any] = {}
        for units in self.channel.index_extras.values():
            for key, value in units.get(unit, {}).items():
                if isinstance(value, dict):
                    merged[key] = {**value, **merged.get(key, {})}
                else:
                    merged.setdefault(key, []).extend(value)
        return merged


class Rendered(dict[str, tuple[str, int, str]]):
    """Index files written for a publish: path -> (sha256, size, content type).

    Small files (such as the 400,000 pages of a PyPI-sized channel) are stored by a few
    threads, a batch at a time, while the next ones are rendered (hashing and file system
    calls leave the interpreter free); `settle` waits for them before the paths are read.
    """

    #: Small files handed to the threads and not yet stored, at most (bounds memory).
    PENDING = 512
    #: Small files stored by one task of a thread (a task per page cost more than its page).
    BATCH = 64

    def __init__(self) -> None:
        super().__init__()
        self._pool: ThreadPoolExecutor | None = None
        self._batch: list[tuple[str, bytes, str]] = []
        self._pending: deque[tuple[list[tuple[str, bytes, str]], Future]] = deque()
        self._waiting = 0  # files in `_pending`

    @contextmanager
    def emit(self, path: str, content_type: str) -> Iterator[BinaryIO]:
        """A format's `Emit`: the file's bytes go to a blob, kept under `path` (a small file
        in one write, by a storing thread)."""
        with storage.BufferedBlobWriter() as writer:
            yield writer
            small = writer.held()
            if small is None:
                sha256, size = writer.commit()
                self[path] = (sha256, size, content_type)
                return
        self._batch.append((path, small, content_type))
        if len(self._batch) >= self.BATCH:
            self._submit()

    def _submit(self) -> None:
        batch, self._batch = self._batch, []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="publish")
        future = self._pool.submit(storage.put_many, [data for _, data, _ in batch])
        self._pending.append((batch, future))
        self._waiting += len(batch)
        while self._waiting > self.PENDING:
            self._settle_one()

    def settle(self) -> None:
        """Wait until every emitted file is stored (raising what storing one raised)."""
        try:
            if self._batch:
                self._submit()
            while self._pending:
                self._settle_one()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
            self._pending.clear()
            self._batch = []
            self._waiting = 0

    def _settle_one(self) -> None:
        batch, future = self._pending.popleft()
        self._waiting -= len(batch)
        for (path, _, kind), (sha256, size) in zip(batch, future.result(), strict=True):
            self[path] = (sha256, size, kind)

    def store(self, channel: Channel, *, published_at) -> None:
        """Make them the channel's published files (inside the caller's transaction, after it
        deleted the rows they replace): 400,000 pages at PyPI scale."""
        if connection.vendor == "postgresql":
            _store_published(channel, self, published_at)
            return
        paths = sorted(self)
        for start in range(0, len(paths), 5000):
            chunk = [(path, *self[path]) for path in paths[start : start + 5000]]
            artifacts = storage.artifacts_for({sha256: size for _, sha256, size, _ in chunk})
            PublishedFile.objects.bulk_create(
                PublishedFile(
                    channel=channel,
                    path=path,
                    artifact=artifacts[sha256],
                    content_type=content_type,
                    published_at=published_at,
                )
                for path, sha256, _, content_type in chunk
            )


def _store_published(
    channel: Channel, files: dict[str, tuple[str, int, str]], published_at: datetime
) -> None:
    """`Rendered.store` on PostgreSQL: every file COPYed into a staging table, then the
    artifacts and the published files in one statement each (no model instances, no
    parameters quoted by the client: a PyPI-sized publish stores 400,000)."""
    artifacts, published = Artifact._meta.db_table, PublishedFile._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor, connection.wrap_database_errors:
        # Dropped first as well: inside an outer transaction (tests) ON COMMIT comes late.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.psm_publish_stage")
        cursor.execute(
            "CREATE TEMP TABLE psm_publish_stage (path text, sha256 text, size bigint, "
            "content_type text) ON COMMIT DROP"
        )
        with cursor.copy("COPY psm_publish_stage FROM STDIN") as copy:
            for path, (sha256, size, content_type) in files.items():
                copy.write_row((path, sha256, size, content_type))
        cursor.execute(
            f"INSERT INTO {artifacts} (sha256, size, created_at, verified_at) "
            "SELECT DISTINCT ON (sha256) sha256, size, %s, %s FROM psm_publish_stage "
            "ORDER BY sha256 ON CONFLICT (sha256) DO NOTHING",
            [now, now],
        )
        cursor.execute(
            f"INSERT INTO {published} (channel_id, path, artifact_id, content_type, published_at) "
            f"SELECT %s, new.path, a.id, new.content_type, %s FROM psm_publish_stage new "
            f"JOIN {artifacts} a ON a.sha256 = new.sha256 ORDER BY new.path",
            [channel.pk, published_at],
        )
        if cursor.rowcount != len(files):  # a blob garbage-collected meanwhile (a race)
            raise RuntimeError(f"published {cursor.rowcount} of {len(files)} files")
        cursor.execute("DROP TABLE pg_temp.psm_publish_stage")


def channel_needs_publish(channel: Channel) -> bool:
    return channel.published_at is None or channel.content_version > channel.published_version


def channel_publish(*, channel: Channel, force: bool = False) -> bool:
    """Render the channel's index files and make them the served ones; False if nothing to do.

    A frozen channel is not published (its clients keep the pinned snapshot); neither is one
    whose published index is already current, unless `force`.
    """
    channel.refresh_from_db()
    fmt = get_format(channel.kind)
    if channel.frozen:
        return False
    if not force and not channel_needs_publish(channel):
        return False
    version, started = channel.content_version, timezone.now()
    rendered = Rendered()
    alone = fmt.capabilities.renders_units_alone
    units = _changed_units(channel) if alone and not force else None
    source = PackageIndexSource(channel, splice=not force)
    try:
        try:
            fmt.render_index(source, rendered.emit, units)
        finally:
            rendered.settle()
        for path, note in source.notes.items():
            if path in rendered:
                keep_note(rendered[path][0], note)
        with transaction.atomic():
            current = Channel.objects.select_for_update().get(pk=channel.pk)
            if current.frozen or (
                current.published_at and current.published_version >= version and not force
            ):
                return False  # frozen meanwhile, or a concurrent publish got there first
            replaced = PublishedFile.objects.filter(channel=current)
            if units is None:
                replaced.delete()
            else:  # only the changed units' files (some may be gone) and the channel-wide ones
                paths = sorted({*rendered, *(p for u in units for p in fmt.unit_paths(u))})
                for start in range(0, len(paths), 5000):
                    replaced.filter(path__in=paths[start : start + 5000]).delete()
            rendered.store(current, published_at=started)
            # Rows removed before rendering began are in no index any more.
            dropped, _ = Package.objects.filter(
                channel=current, removed=True, updated_at__lt=started
            ).delete()
            # What each file was rendered from, for the next publish to splice into.
            marks = {
                path: {
                    **mark,
                    "sha256": rendered[path][0],
                    "with": {c: rendered[c][0] for c in mark.get("with", ()) if c in rendered},
                }
                for path, mark in source.marks.items()
                if path in rendered and "sections" in mark
            }
            if units is not None:  # the other units' files stay as they were
                marks = {**(current.render_marks or {}), **marks}
            Channel.objects.filter(pk=current.pk).update(
                published_version=version, published_at=timezone.now(), render_marks=marks
            )
            forget_gone(current.pk, marks)
        logger.info(
            "published %s: %d files (%d spliced), %d packages dropped",
            channel,
            len(rendered),
            len(source.spliced),
            dropped,
        )
        _compress_after(channel, rendered)
        if source.damaged:
            from .verification import record_rendered_anew  # verification imports this module

            record_rendered_anew(channel, source.damaged)
        return True
    finally:
        _withdraw_damaged_found(source, rendered)


def _withdraw_damaged_found(source: PackageIndexSource, rendered: Rendered) -> None:
    """The files a publish found damaged while building on them: one it rendered again (the
    same bytes, stored whole again) is whole for every channel holding it; any other gets
    verification's remedy for the channels that still hold it."""
    written = {sha256 for sha256, _, _ in rendered.values()}
    for damaged in source.damaged.values():
        if damaged.artifact.sha256 not in written:
            _withdraw_damaged(damaged)


def _compress_after(channel: Channel, rendered: dict[str, tuple[str, int, str]]) -> None:
    """Make the `.bz2` copies of the files just published: here, or by a task if large."""
    copied = get_format(channel.kind).capabilities.bz2_copies
    sizes = [size for path, (_, size, _) in rendered.items() if path.endswith(copied)]
    if any(size > BZ2_INLINE_BYTES for size in sizes):
        # bzip2 of a conda-forge-sized index takes most of a minute: not on the run's clock.
        from .tasks import compress_channel

        transaction.on_commit(lambda: compress_channel.delay(channel.pk))
    elif sizes:
        channel_compress(channel=channel)


#: A publish whose files to copy as `.bz2` are larger leaves the copies to a task.
BZ2_INLINE_BYTES = 8 * 1024 * 1024


class _PublishedReader:
    """The channel's published index files, for a format to read (`PublishedIndex`); it
    remembers what it read, so the swap can tell whether a publish replaced any of it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.read: dict[str, int | None] = {}  # path -> artifact id (None: not published)

    def open(self, path: str) -> BinaryIO | None:
        published = (
            PublishedFile.objects.filter(channel=self.channel, path=path)
            .select_related("artifact")
            .first()
        )
        self.read[path] = published.artifact_id if published else None
        # A rewrite keeps the file's bytes: checked first (`storage.read_verified`).
        return io.BytesIO(storage.read_verified(published.artifact)) if published else None

    def still_current(self) -> bool:
        paths = sorted(self.read)
        current = dict(
            PublishedFile.objects.filter(channel=self.channel, path__in=paths).values_list(
                "path", "artifact_id"
            )
        )
        return all(current.get(path) == artifact for path, artifact in self.read.items())


#: How often a withdrawal reads the index again when a publish replaced it meanwhile.
WITHDRAW_ATTEMPTS = 3


def channel_withdraw(*, channel: Channel, paths: Iterable[tuple[str, str]]) -> bool:
    """Rewrite the channel's published index files that list these (unit, filename) files so
    that they no longer do, every other entry as it was; False if none of them was listed.

    For frozen channels above all (a policy that enforces on them takes newly blocked files
    out of the pinned index): the published files are rewritten, never rendered from the
    channel's packages, so nothing that entered the channel since the freeze appears. The
    rewritten files are swapped in together, as a publish swaps its files.
    """
    files: dict[str, set[str]] = {}
    for unit, filename in paths:
        files.setdefault(unit, set()).add(filename)
    if not files:
        return False
    for _attempt in range(WITHDRAW_ATTEMPTS):
        withdrawn = _withdraw_once(channel, files)
        if withdrawn is not None:
            return withdrawn
    raise RuntimeError(
        f"the published index of {channel} kept changing while files were withdrawn from it; "
        "try again"
    )


def _withdraw_once(channel: Channel, files: dict[str, set[str]]) -> bool | None:
    """One withdrawal (see `channel_withdraw`); None if a publish replaced a file it read."""
    fmt = get_format(channel.kind)
    index, rendered = _PublishedReader(channel), Rendered()
    try:
        replaced = fmt.withdraw(index, files, rendered.emit)
    except storage.DamagedFile as exc:
        _withdraw_damaged(exc)  # withdrawn, or rendered anew: read again
        return None
    finally:
        rendered.settle()
    if not replaced:
        return False
    with transaction.atomic():
        current = Channel.objects.select_for_update().get(pk=channel.pk)
        if not index.still_current():
            return None
        copied = fmt.capabilities.bz2_copies
        copies = {f"{path}.bz2" for path in replaced if path.endswith(copied)}
        PublishedFile.objects.filter(channel=current, path__in=replaced | copies).delete()
        # Later than the channel's `published_at` (even with another host's clock ahead), so
        # `_changed_units` still measures from the last publish: what changed since then is
        # rendered at the next one.
        now = timezone.now()
        if current.published_at is not None and now <= current.published_at:
            now = current.published_at + timedelta(milliseconds=1)
        rendered.store(current, published_at=now)
    logger.info(
        "withdrew %d files from the index of %s: %d index files rewritten, %d dropped",
        sum(map(len, files.values())),
        channel,
        len(rendered),
        len(replaced - rendered.keys()),
    )
    _compress_after(channel, rendered)
    return True


def channel_compress(*, channel: Channel) -> int:
    """Add the `.bz2` copy of every published file that gets one (`bz2_copies` of the
    channel's format: conda's repodata.json) and lacks it; return how many.

    A copy is only added while its source is still the published one, so it always matches.
    """
    added = 0
    copied = Q()
    for suffix in get_format(channel.kind).capabilities.bz2_copies:
        copied |= Q(path__endswith=suffix)
    if not copied:
        return 0
    sources = PublishedFile.objects.filter(copied, channel=channel)
    for source in sources.select_related("artifact"):
        target = source.path + ".bz2"
        if PublishedFile.objects.filter(channel=channel, path=target).exists():
            continue
        try:
            sha256, size = _bz2_copy(source.artifact)
        except storage.DamagedFile as exc:
            _withdraw_damaged(exc)  # published anew, its copy made then
            continue
        with transaction.atomic():
            still = PublishedFile.objects.select_for_update().filter(
                pk=source.pk, artifact_id=source.artifact_id
            )
            if still.exists():
                PublishedFile.objects.get_or_create(
                    channel=channel,
                    path=target,
                    defaults={
                        "artifact": storage.artifact_for(sha256, size),
                        "content_type": content_type(target),
                        "published_at": source.published_at,
                    },
                )
                added += 1
    return added


def _bz2_copy(artifact: Artifact) -> tuple[str, int]:
    """Store the `.bz2` copy of a stored file, whose bytes are checked as they are read: a
    copy of damaged bytes is not kept (DamagedFile)."""
    with storage.BlobWriter() as writer:
        compressor = bz2.BZ2Compressor(9)
        for chunk in storage.checked_chunks(artifact):
            writer.write(compressor.compress(chunk))
        writer.write(compressor.flush())
        return writer.commit()


_remedy = threading.local()


def _withdraw_damaged(damaged: storage.DamagedFile) -> None:
    """Verification's remedy for a file found damaged while reading it to build on it. The
    remedy publishes again; a file found damaged again meanwhile (storage that damages what
    it keeps) is raised, not remedied in turn without end."""
    from .verification import withdraw_damaged  # which publishes: imports this module

    if getattr(_remedy, "running", False):
        raise damaged
    _remedy.running = True
    try:
        withdraw_damaged(damaged)
    finally:
        _remedy.running = False


def _changed_units(channel: Channel) -> set[str] | None:
    """Units whose packages changed since the last publish began (None: never published)."""
    if channel.published_at is None:
        return None
    # A withdrawal's files are newer than the channel's `published_at`: not a publish.
    published = PublishedFile.objects.filter(
        channel=channel, published_at__lte=channel.published_at
    )
    last = published.aggregate(at=Max("published_at"))["at"]
    if last is None:
        return None
    changed = Package.objects.filter(channel=channel, updated_at__gte=last)
    return set(changed.order_by().values_list("unit", flat=True).distinct())


# --- Notes a format keeps on the files it rendered ----------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _notes_folder() -> Path:
    return Path(settings.DATA_DIR) / "index-notes"


def keep_note(sha256: str, note: bytes) -> None:
    """Keep a format's note on the rendered file whose digest is `sha256` (`render_ended`);
    nothing if it cannot be written (the next splice does without)."""
    target = _notes_folder() / sha256
    temporary = target.with_name(f".{sha256}.{os.getpid()}.{threading.get_ident()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(note)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)


def read_note_of(sha256: Any) -> bytes | None:
    """The note kept on the file whose digest is `sha256`, if any."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        return None
    try:
        return (_notes_folder() / sha256).read_bytes()
    except OSError:
        return None


def _forget_notes(marks: Iterable[dict[str, Any]], older_than: float) -> int:
    """Delete the notes on files no channel's marks name any more (older than `older_than`
    seconds: one being kept by a publish right now has no mark yet); return how many."""
    named = {mark.get("sha256") for mark in marks}
    cutoff, deleted = time.time() - older_than, 0
    try:
        notes = list(_notes_folder().iterdir())
    except OSError:
        return 0
    for path in notes:
        try:
            if path.name not in named and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except OSError:
            continue
    return deleted


def collect_garbage(*, older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete stored files that nothing references any more; return how many. Temporary files
    a killed download or first request left behind go too.

    Only files older than `older_than`, so one being published right now is never taken.
    """
    seconds = older_than.total_seconds()
    temporary = storage.remove_stale_files(storage.tmp_dir(), seconds) + storage.remove_stale_files(
        storage.locks_dir(), seconds, "*.part"
    )
    if temporary:
        logger.info("removed %s stale temporary files", temporary)
    # What the files rendered since were told of already (a channel never published again).
    marks = Channel.objects.values_list("render_marks", flat=True)
    every_mark = [mark for marks_of in marks for mark in (marks_of or {}).values()]
    forget_gone_everywhere(every_mark)
    notes = _forget_notes(every_mark, seconds)
    if notes:
        logger.info("removed %s notes on index files no longer published", notes)
    cutoff = timezone.now() - older_than
    orphans = (
        Artifact.objects.filter(
            created_at__lt=cutoff, packages__isnull=True, sidecar_of__isnull=True
        )
        .exclude(pk__in=PublishedFile.objects.values("artifact_id"))
        .values_list("pk", "sha256")
    )
    deleted = 0
    for pk, sha256 in orphans.iterator(1000):
        with transaction.atomic():
            if Artifact.objects.filter(pk=pk, packages__isnull=True).delete()[0]:
                transaction.on_commit(lambda sha256=sha256: storage.delete_blob(sha256))
                deleted += 1
    return deleted

"""Bring a channel's packages from one mirror and unit in line with the upstream index.

Only what changed is written: each stored record carries a 64-bit digest, and a record whose
digest is unchanged costs nothing. Writes go in batches (PostgreSQL: COPY into a staging table,
then one INSERT ... ON CONFLICT), packages gone upstream are marked removed (publishing drops
them), and every batch bumps the channel's content version so publishing knows it is behind.
"""

from __future__ import annotations

from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from channels_app.formats import PackageRecord
from channels_app.models import Channel, Package

from ..models import Mirror
from .progress import Progress

BATCH_SIZE = 5000
COPY_FROM = 500  # smaller batches (a Python project's files) are one plain INSERT
PENDING = "awaiting the policy's decision"
#: Columns a sync writes; the rest (id, artifact) are kept or defaulted.
COLUMNS = (
    "channel_id",
    "mirror_id",
    "subdir",
    "filename",
    "name",
    "version",
    "sha256",
    "md5",
    "size",
    "upstream_url",
    "record",
    "record_hash",
    "on_demand",
    "removed",
    "error",
    "excluded",
    "added_at",
    "updated_at",
)
#: Columns an upsert refreshes on an existing row (not channel, subdir, filename, added_at).
UPDATED = tuple(c for c in COLUMNS if c not in ("channel_id", "subdir", "filename", "added_at"))


class Known(NamedTuple):
    id: int
    hash: int
    removed: bool


class UnitIngest:
    """Diff one unit (a conda subdir) of one mirror against the database, writing in batches.

    Call `add` for every allowed record, then `finish` once the whole index was read; a run that
    stops before `finish` keeps what it wrote and removes nothing.
    """

    def __init__(
        self, mirror: Mirror, unit: str, progress: Progress, *, shared: bool = True
    ) -> None:
        self.mirror, self.unit, self.progress = mirror, unit, progress
        self._known: dict[str, Known] | None = None  # read on first use (see `known`)
        # With a policy, new and changed records wait for its decision before anyone sees them.
        decided = mirror.options if mirror.format.filter_files({}, ()) is not None else None
        self.initial_exclusion = PENDING if decided or mirror.effective_policy() else ""
        # Files another mirror (or an upload) already provides in this channel and unit;
        # `shared=False` (the caller checked the channel once) saves a query per unit.
        self.taken = (
            set(
                Package.objects.filter(channel_id=mirror.channel_id, subdir=unit)
                .exclude(mirror=mirror)
                .values_list("filename", flat=True)
            )
            if shared
            else set()
        )
        self.pending: dict[str, tuple] = {}
        # Stored files whose new record has only an md5 (CRAN): checked against the old md5.
        self.md5_only: list[str] = []
        self.changed = 0

    @property
    def known(self) -> dict[str, Known]:
        """The unit's stored rows, read when first needed (a format may overlap the read)."""
        if self._known is None:
            self._known = _load_known(self.mirror.pk, self.unit)
        return self._known

    def current_digests(self) -> dict[str, int]:
        """filename -> digest of the stored rows an unchanged entry would leave as they are."""
        return {
            filename: known.hash
            for filename, known in self.known.items()
            if not known.removed and filename not in self.taken
        }

    def is_current(self, filename: str, digest: int) -> bool:
        """Whether the stored row is this very entry (then it counts as seen, nothing to do)."""
        old = self.known.get(filename)
        if old is None or old.hash != digest or old.removed or filename in self.taken:
            return False
        del self.known[filename]
        return True

    def add(self, record: PackageRecord) -> bool:
        """Queue a new or changed record; False if another mirror provides it."""
        if record.filename in self.taken:
            return False
        digest = record.digest
        if self.known.pop(record.filename, None) is not None and record.md5 and not record.sha256:
            self.md5_only.append(record.filename)
        now = timezone.now()
        self.pending[record.filename] = (
            self.mirror.channel_id,
            self.mirror.pk,
            self.unit,
            record.filename,
            record.name[:255],
            record.version[:100],
            record.sha256 or "",
            record.md5 or "",
            record.size,
            record.url,
            record.document,
            digest,
            self.mirror.mode == Mirror.Mode.PASSIVE,
            False,
            "",
            self.initial_exclusion,
            now,
            now,
        )
        if len(self.pending) >= BATCH_SIZE:
            self.flush()
        return True

    def flush(self) -> None:
        if not self.pending:
            return
        rows = list(self.pending.values())
        stale = self._md5_changed()
        self.pending = {}
        with transaction.atomic():
            if connection.vendor == "postgresql":
                (_upsert_copy if len(rows) >= COPY_FROM else _upsert_values)(rows)
            else:
                _upsert_orm(rows)
            if stale:  # the stored bytes are not the file the new record describes
                Package.objects.filter(pk__in=stale).update(artifact=None)
            self._changed(len(rows))
        self.progress.ingested += len(rows)
        if self.mirror.mode == Mirror.Mode.PASSIVE:
            self.progress.passive += len(rows)

    def _md5_changed(self) -> list[int]:
        """Ids of stored rows about to get a record whose md5 differs (and no sha256 that
        `finish` could compare with the stored file)."""
        md5s = {name: self.pending[name][7] for name in self.md5_only if name in self.pending}
        self.md5_only = []
        if not md5s:
            return []
        rows = Package.objects.filter(
            mirror=self.mirror, subdir=self.unit, filename__in=list(md5s), artifact__isnull=False
        ).values_list("pk", "filename", "md5")
        return [pk for pk, filename, md5 in rows if md5 != md5s[filename]]

    def finish(self) -> None:
        """Write what is left and mark what upstream no longer lists (or we no longer allow)."""
        self.flush()
        gone = [known.id for known in self.known.values() if not known.removed]
        for start in range(0, len(gone), BATCH_SIZE):
            batch = gone[start : start + BATCH_SIZE]
            with transaction.atomic():
                Package.objects.filter(pk__in=batch).update(removed=True, updated_at=timezone.now())
                self._changed(len(batch))
        self._known = {}
        if self.changed:
            # A record whose file changed (new sha256) no longer matches what we stored.
            Package.objects.filter(
                mirror=self.mirror, subdir=self.unit, artifact__isnull=False
            ).exclude(sha256="").exclude(artifact__sha256=F("sha256")).update(
                artifact=None, updated_at=timezone.now()
            )

    def _changed(self, count: int) -> None:
        self.changed += count
        Channel.objects.filter(pk=self.mirror.channel_id).update(
            content_version=F("content_version") + 1
        )


def _load_known(mirror_id: int, unit: str) -> dict[str, Known]:
    """filename -> (id, digest, removed) of the unit's rows; a plain cursor, as this reads
    every row of a conda-forge-sized subdir (ORM rows cost several times more)."""
    table = Package._meta.db_table
    known: dict[str, Known] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT filename, id, record_hash, removed FROM {table} "
            "WHERE mirror_id = %s AND subdir = %s",
            [mirror_id, unit],
        )
        while rows := cursor.fetchmany(20_000):
            for filename, pk, digest, removed in rows:
                known[filename] = Known(pk, digest, bool(removed))
    return known


def _upsert_copy(rows: list[tuple]) -> None:
    table = Package._meta.db_table
    columns = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in UPDATED)
    with connection.cursor() as cursor:
        # Dropped first as well: inside an outer transaction (tests) ON COMMIT comes late.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.psm_package_stage")
        cursor.execute(
            f"CREATE TEMP TABLE psm_package_stage ON COMMIT DROP AS "
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        with cursor.copy(f"COPY psm_package_stage ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # The WHERE keeps a row another mirror brought in meanwhile from changing hands.
        cursor.execute(
            f"INSERT INTO {table} ({columns}, artifact_id) "
            f"SELECT {columns}, NULL FROM psm_package_stage "
            f"ON CONFLICT (channel_id, subdir, filename) DO UPDATE SET {updates} "
            f"WHERE {table}.mirror_id IS NOT DISTINCT FROM EXCLUDED.mirror_id"
        )


def _upsert_values(rows: list[tuple]) -> None:
    """A small batch as one INSERT ... ON CONFLICT (no staging table)."""
    table = Package._meta.db_table
    columns = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in UPDATED)
    row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(rows))} "
            f"ON CONFLICT (channel_id, subdir, filename) DO UPDATE SET {updates} "
            f"WHERE {table}.mirror_id IS NOT DISTINCT FROM EXCLUDED.mirror_id",
            [value for values in rows for value in values],
        )


def _upsert_orm(rows: list[tuple]) -> None:
    Package.objects.bulk_create(
        [Package(**dict(zip(COLUMNS, row, strict=True))) for row in rows],
        update_conflicts=True,
        unique_fields=["channel", "subdir", "filename"],
        update_fields=[c.removesuffix("_id") for c in UPDATED],
    )

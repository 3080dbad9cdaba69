"""A first load of a mirror whose files wait for a decision that needs them together (mirror
filters, or a policy whose decision on a file reads other files: a dependency closure, the noarch
dependencies a platform rule admits, R licenses completed from other versions): the run's rows
are staged, decided together and written to the package table once, each with its decision.
Where each file is decided alone, rows are decided as they are read and written once with no
stage (`policy.RowDecisions`).

Without a stage every row entered the package table pending and was then rewritten with its
decision through the table's indexes (600,000 conda files: 60 of a sync's 99 s). The stage is
an UNLOGGED table without indexes or constraints, named after the mirror and private to the run
(not a TEMP table: the writing thread and the run share it on two connections). It is dropped on
every way out; a stage a killed worker left behind is dropped when the next first load starts. A
run that stops or fails moves what it staged into the package table pending, as it would have
written it without a stage, so nothing it read is lost and the next run decides it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.adapt import Loader

from channels_app.models import Channel, Package

from ..models import Mirror, SyncRun
from .ingest import COLUMNS, copy_statement, upsert_mine, upsert_updates, write_copy
from .policy import PolicyChange, decide_rows, decider_for

PREFIX = "psm_first_load_"
#: The column numbering the staged rows in order: each row's decision is joined on it.
ORDINAL = "n"


class FirstLoad:
    """The stage of one run's first load (see the module docstring)."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.table = f"{PREFIX}{mirror.pk}_{uuid.uuid4().hex[:16]}"
        self.staged = 0  # rows staged so far

    @classmethod
    def begin(cls, mirror: Mirror) -> FirstLoad:
        """Create the run's stage, after dropping the stages no active run owns."""
        stage = cls(mirror)
        drop_abandoned(mirror.pk)
        table = Package._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE UNLOGGED TABLE {stage.table} AS "
                f"SELECT {', '.join(COLUMNS)} FROM {table} WITH NO DATA"
            )
            # Numbered as COPY reads them (one writer at a time): the order they came in.
            cursor.execute(
                f"ALTER TABLE {stage.table} ADD COLUMN {ORDINAL} bigint "
                "GENERATED ALWAYS AS IDENTITY"
            )
        return stage

    def write(self, rows: list[tuple], now) -> None:
        """COPY rows (COLUMNS but the two timestamps) into the stage, numbered in order."""
        with connection.cursor() as cursor, connection.wrap_database_errors:
            with cursor.copy(copy_statement(self.table)) as copy:
                write_copy(copy, rows, now)
        self.staged += len(rows)  # only once written: a refused batch is retried unit by unit

    def land(self, *, decide: bool) -> PolicyChange:
        """Move the staged rows into the package table, decided (`decide`) or pending, and
        drop the stage (also when the move fails); return what the decision changes."""
        try:
            change, decisions = PolicyChange(), {}
            if self.staged and decide:
                change, decisions = self._decide()
            if self.staged:
                self._insert(decisions, decided=decide)
            return change
        finally:
            self.drop()

    def drop(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")

    def _decide(self) -> tuple[PolicyChange, dict[int, tuple[str, str]]]:
        """Decide the staged rows as `packages_decide` decides stored ones (in the package
        table's order); return the change and each kept-out or marked row's decision."""
        decider = decider_for(self.mirror)
        if not decider.judges_anything:
            return PolicyChange(), {}
        # The first day as `packages_decide` reads it (UTC), for a cooldown only.
        seen = "(added_at AT TIME ZONE 'UTC')::date" if decider.policy.newest else ORDINAL
        columns = (
            f"{ORDINAL}, unit, filename, version, record, excluded_reason, "
            f"would_exclude_reason, {seen}"
        )
        rows = _stream(
            f"SELECT {columns} FROM {self.table} WHERE NOT removed "
            "ORDER BY unit, name, version, filename"
        )
        change, updates = decide_rows(decider, rows)
        decisions = {
            number: marks
            for marks, numbers in updates.items()
            if marks != ("", "")
            for number in numbers
        }
        return change, decisions

    def _insert(self, decisions: dict[int, tuple[str, str]], *, decided: bool) -> None:
        table = Package._meta.db_table
        columns = ", ".join(COLUMNS)
        if decided:
            now = timezone.now()
            picked = ", ".join(
                "coalesce(d.reason, '')"
                if column == "excluded_reason"
                else "coalesce(d.would, '')"
                if column == "would_exclude_reason"
                else "%(now)s"
                if column == "updated_at"
                else f"s.{column}"
                for column in COLUMNS
            )
        else:
            now, picked = None, ", ".join(f"s.{column}" for column in COLUMNS)
        source = (
            f"FROM {self.table} s LEFT JOIN pg_temp.psm_first_load_decision d "
            f"ON d.{ORDINAL} = s.{ORDINAL}"
        )
        with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
            # Dropped first as well: inside an outer transaction (tests) ON COMMIT comes late.
            cursor.execute("DROP TABLE IF EXISTS pg_temp.psm_first_load_decision")
            cursor.execute(
                "CREATE TEMP TABLE psm_first_load_decision "
                f"({ORDINAL} bigint, reason text, would text) ON COMMIT DROP"
            )
            if decisions:
                with cursor.copy(
                    f"COPY psm_first_load_decision ({ORDINAL}, reason, would) FROM STDIN"
                ) as copy:
                    for number, (reason, would) in decisions.items():
                        copy.write_row((number, reason, would))
            # Neither table was ever analyzed: without row counts the planner sorts both
            # for a merge join (and compiles it with JIT); a hash join on the ordinal is a
            # fraction of a second. A small sample of the stage's ordinals is enough.
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL default_statistics_target = 10")
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute(f"ANALYZE {self.table} ({ORDINAL})")
            cursor.execute("ANALYZE pg_temp.psm_first_load_decision")
            params = {"now": now}
            try:
                with transaction.atomic():
                    cursor.execute(
                        f"INSERT INTO {table} ({columns}) SELECT {picked} {source}", params
                    )
            except IntegrityError:
                # Another mirror of the channel took one of the files meanwhile: an upsert
                # that leaves other mirrors' rows alone, as the writer's own upsert does (the
                # later of two rows of one file wins, as it would have written them).
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) "
                    f"SELECT DISTINCT ON (s.unit, s.filename) {picked} {source} "
                    f"ORDER BY s.unit, s.filename, s.{ORDINAL} DESC "
                    "ON CONFLICT (channel_id, unit, filename) "
                    f"DO UPDATE SET {upsert_updates(table)} {upsert_mine(table)}",
                    params,
                )
            Channel.objects.filter(pk=self.mirror.channel_id).update(
                content_version=F("content_version") + 1
            )


def drop_abandoned(mirror_id: int) -> None:
    """Drop the stages no run is using: those of mirrors without an active run (a killed
    worker's, a deleted mirror's) and those of `mirror_id`, whose one active run is the caller
    (it has none yet)."""
    active = set(
        SyncRun.objects.filter(state__in=SyncRun.ACTIVE_STATES).values_list("mirror_id", flat=True)
    )
    active.discard(mirror_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND starts_with(relname, %s) "
            "AND relnamespace = current_schema()::regnamespace",
            [PREFIX],
        )
        for (name,) in cursor.fetchall():
            owner = name.removeprefix(PREFIX).split("_", 1)[0]
            if not (owner.isdigit() and int(owner) in active):
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')


class _Bytes(Loader):
    def load(self, data) -> bytes:
        return bytes(data)


def _stream(sql: str) -> Iterator[tuple]:
    """The rows of a query on a server-side cursor (flat memory), `text` columns (records)
    as raw bytes (parsed as JSON, never decoded to str)."""
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.connection.cursor(name="psm_first_load") as named:
            named.adapters.register_loader("text", _Bytes)
            named.itersize = 10_000
            named.execute(sql)
            yield from named

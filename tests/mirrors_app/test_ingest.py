"""Batched writes across units: one refused value sinks only its own unit."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from channels_app.formats import PackageRecord
from channels_app.models import Package
from mirrors_app.models import SyncRun
from mirrors_app.sync.fetch_state import KeptDocument
from mirrors_app.sync.ingest import BatchWriter, KnownRows, UnitIngest
from mirrors_app.sync.progress import Progress
from tests.factories import ChannelFactory, MirrorFactory

pytestmark = pytest.mark.django_db
#: The writing thread and COPY are PostgreSQL's: on SQLite, batches are written in the caller's
#: thread by the upsert alone (tested by the rest of this file and the sync tests).
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the writing thread and COPY are PostgreSQL's"
)


def _record(project: str, filename: str, document: str = "{}") -> PackageRecord:
    return PackageRecord(
        name=project,
        version="1.0",
        filename=filename,
        document=document,
        entry_digest=hash(document),
    )


@pytest.fixture
def mirror():
    return MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")


@pytest.fixture
def progress(mirror):
    run = SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING)
    return Progress(run)


@postgres_only
def test_units_share_one_batch_and_a_refused_unit_does_not_sink_the_others(mirror, progress):
    writer = BatchWriter(mirror, progress)
    known = KnownRows(mirror.pk, ["alpha", "beta", "gamma"])
    for project, document in [("alpha", "{}"), ("beta", "bad \x00 byte"), ("gamma", "{}")]:
        ingest = UnitIngest(mirror, project, progress, writer=writer, known=known)
        ingest.add(_record(project, f"{project}-1.0.tar.gz", document))
        ingest.finish()
    assert not Package.objects.exists()  # nothing written until the writer flushes
    writer.flush()
    assert sorted(Package.objects.values_list("unit", flat=True)) == ["alpha", "gamma"]
    assert list(writer.failed) == ["beta"] and "NUL" in writer.failed["beta"]
    assert progress.ingested == 2


def test_a_second_pass_reads_known_rows_in_chunks_and_removes_what_is_gone(mirror, progress):
    writer = BatchWriter(mirror, progress)
    first = KnownRows(mirror.pk, ["alpha", "beta"])
    for project in ("alpha", "beta"):
        ingest = UnitIngest(mirror, project, progress, writer=writer, known=first)
        ingest.add(_record(project, f"{project}-1.0.tar.gz"))
        ingest.add(_record(project, f"{project}-2.0.tar.gz"))
        ingest.finish()
    writer.flush()
    known = KnownRows(mirror.pk, ["alpha", "beta"])
    known.ROWS = 1  # one unit a query
    for project in ("alpha", "beta"):
        ingest = UnitIngest(mirror, project, progress, writer=writer, known=known)
        record = _record(project, f"{project}-2.0.tar.gz")
        assert ingest.is_current(record.filename, record.entry_digest)
        ingest.finish()  # 1.0 is gone upstream
        assert ingest.changed == 1
    writer.flush()
    assert sorted(Package.objects.filter(removed=True).values_list("filename", flat=True)) == [
        "alpha-1.0.tar.gz",
        "beta-1.0.tar.gz",
    ]


def test_rows_the_index_says_are_gone_are_removed_before_the_rest_is_read(mirror, progress):
    """A patch names what it removes: those rows go to the writer at once, to be removed
    while the entries it adds or changes are read (not at the unit's end)."""
    writer = BatchWriter(mirror, progress)
    ingest = UnitIngest(mirror, "alpha", progress, writer=writer, known=KnownRows(mirror.pk, []))
    stored = [_record("alpha", f"alpha-{v}.tar.gz", f'{{"v": {v}}}') for v in ("1.0", "2.0")]
    for record in stored:
        ingest.add(record)
    ingest.finish()
    writer.flush()
    kept = KeptDocument(None, 2, sum(r.entry_digest for r in stored), "here", "hash")
    known = KnownRows(mirror.pk, ["alpha"])
    ingest = UnitIngest(
        mirror, "alpha", progress, writer=writer, known=known, shared=False, kept=kept
    )
    names = ["alpha-1.0.tar.gz", "alpha-3.0.tar.gz"]
    assert ingest.only(names, gone=["alpha-1.0.tar.gz"]) == 1  # 2.0 stays as it is
    # Nothing flushed: in a test's transaction the writer writes what it is handed at once.
    removed = Package.objects.filter(removed=True).values_list("filename", flat=True)
    assert list(removed) == ["alpha-1.0.tar.gz"]
    ingest.add(_record("alpha", "alpha-3.0.tar.gz", '{"v": 3}'))
    ingest.finish()
    writer.flush()
    live = Package.objects.filter(removed=False).values_list("filename", flat=True)
    assert sorted(live) == ["alpha-2.0.tar.gz", "alpha-3.0.tar.gz"]
    assert (ingest.changed, ingest.live_rows) == (2, 2)


def _add_many(mirror, progress, writer, unit: str, count: int, *, shared: bool = True) -> None:
    known = KnownRows(mirror.pk, [unit])
    ingest = UnitIngest(mirror, unit, progress, writer=writer, known=known, shared=shared)
    for i in range(count):
        ingest.add(_record(unit, f"{unit}-{i}.tar.gz", f'{{"n": {i}}}'))
    ingest.finish()


@postgres_only
def test_new_files_are_copied_in_and_one_taken_meanwhile_falls_back_to_the_upsert(
    mirror, progress, monkeypatch
):
    _copied_in_or_upserted(mirror, progress, monkeypatch)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_taken_file_undoes_the_writing_threads_batch_and_upserts_it(monkeypatch):
    """Outside a transaction, the writing thread's batch (no savepoint) is undone whole and
    written again by the upsert."""
    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")
    progress = Progress(SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING))
    _copied_in_or_upserted(mirror, progress, monkeypatch)


def _copied_in_or_upserted(mirror, progress, monkeypatch) -> None:
    monkeypatch.setattr("mirrors_app.sync.ingest.COPY_FROM", 2)
    other = MirrorFactory(channel=mirror.channel, kind="pypi", name="other")
    Package.objects.create(
        channel=mirror.channel,
        mirror=other,
        unit="alpha",
        filename="alpha-1.tar.gz",
        name="alpha",
        version="1",
        record="theirs",
    )
    writer = BatchWriter(mirror, progress)
    # shared=False: the caller saw no other mirror, so every file counts as new (COPY) ...
    _add_many(mirror, progress, writer, "beta", 3, shared=False)
    _add_many(mirror, progress, writer, "alpha", 3, shared=False)
    writer.flush()
    writer.close()
    # ... and the file the other mirror has stays its own, untouched; the rest arrive.
    assert Package.objects.get(filename="alpha-1.tar.gz").record == "theirs"
    mine = Package.objects.filter(mirror=mirror)
    assert sorted(mine.values_list("filename", flat=True)) == [
        "alpha-0.tar.gz",
        "alpha-2.tar.gz",
        "beta-0.tar.gz",
        "beta-1.tar.gz",
        "beta-2.tar.gz",
    ]
    assert all(p.added_at and p.updated_at for p in mine)
    assert not writer.failed


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_batches_are_written_by_a_thread_outside_a_transaction(monkeypatch):
    monkeypatch.setattr("mirrors_app.sync.ingest.BATCH_SIZE", 4)
    monkeypatch.setattr("mirrors_app.sync.ingest.COPY_FROM", 2)
    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")
    progress = Progress(SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING))
    writer = BatchWriter(mirror, progress)
    _add_many(mirror, progress, writer, "alpha", 10)
    assert writer._thread is not None and writer._thread.is_alive()
    writer.flush()  # returns once everything handed over is written
    assert Package.objects.filter(mirror=mirror).count() == 10
    assert progress.ingested == 10
    # A second pass: changed records are upserted, what is gone is removed.
    known = KnownRows(mirror.pk, ["alpha"])
    ingest = UnitIngest(mirror, "alpha", progress, writer=writer, known=known)
    for i in range(5):
        ingest.add(_record("alpha", f"alpha-{i}.tar.gz", f'{{"n": {i}, "new": true}}'))
    ingest.finish()
    writer.close()
    assert writer._thread is None
    rows = Package.objects.filter(mirror=mirror)
    assert rows.filter(removed=True).count() == 5
    assert rows.filter(removed=False, record__contains='"new"').count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_lost_connection_in_the_writing_thread_ends_the_run(monkeypatch):
    monkeypatch.setattr("mirrors_app.sync.ingest.BATCH_SIZE", 2)
    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")
    progress = Progress(SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING))
    writer = BatchWriter(mirror, progress)
    from django.db import OperationalError

    def lost(*args):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(writer, "_write", lost)
    with pytest.raises(OperationalError):
        _add_many(mirror, progress, writer, "alpha", 4)
        writer.flush()
    writer.close()
    assert not Package.objects.exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_units_are_kept_as_done_once_written_without_waiting_and_never_if_refused():
    """`then` runs in the writing thread after the rows handed over before it are written:
    the run reads on meanwhile, and a unit whose rows were refused is never kept as done."""
    import threading

    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")
    progress = Progress(SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING))
    writer = BatchWriter(mirror, progress)
    known = KnownRows(mirror.pk, ["alpha", "beta"])
    for project, document in [("alpha", "{}"), ("beta", "bad \x00 byte")]:
        ingest = UnitIngest(mirror, project, progress, writer=writer, known=known)
        ingest.add(_record(project, f"{project}-1.0.tar.gz", document))
        ingest.finish()
    release, seen = threading.Event(), []

    def written() -> None:
        release.wait(10)  # the run's thread returned from `then` before this ran
        seen.append((threading.current_thread().name, sorted(Package.objects.values_list("unit", flat=True)), dict(writer.failed)))  # fmt: skip

    writer.then(written)
    release.set()
    writer.close()
    ((thread, units, failed),) = seen
    assert thread == f"writer-{mirror.pk}" and units == ["alpha"] and list(failed) == ["beta"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_batchs_removals_are_written_beside_its_rows_and_a_refused_one_sinks_its_unit(
    monkeypatch,
):
    """The writing thread removes on a connection of its own while it writes the rows; the
    batch counts as written (`then`) once both are, and a removal refused is retried unit by
    unit: only the unit it belongs to fails."""
    import threading

    from mirrors_app.sync import ingest as ingest_module

    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")
    progress = Progress(SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING))
    writer = BatchWriter(mirror, progress)
    for unit in ("alpha", "beta"):
        _add_many(mirror, progress, writer, unit, 4)
    writer.flush()
    original, threads = ingest_module._mark_removed, []

    def mark_removed(ids, now):
        threads.append(threading.current_thread().name)
        if Package.objects.filter(pk__in=ids, unit="beta").exists():
            raise DatabaseError("refused")
        original(ids, now)

    monkeypatch.setattr(ingest_module, "_mark_removed", mark_removed)
    known = KnownRows(mirror.pk, ["alpha", "beta"])
    for unit in ("alpha", "beta"):
        ingest = UnitIngest(mirror, unit, progress, writer=writer, known=known)
        for i in range(2):  # 0 and 1 change, 2 and 3 are gone
            ingest.add(_record(unit, f"{unit}-{i}.tar.gz", '{"changed": true}'))
        ingest.finish()
    seen = []
    removed = Package.objects.filter(removed=True).values_list("filename", flat=True)
    writer.then(lambda: seen.append(sorted(removed)))
    writer.close()
    assert threads[0] == "psm-removals"
    assert seen == [["alpha-2.tar.gz", "alpha-3.tar.gz"]]
    assert list(writer.failed) == ["beta"]
    changed = Package.objects.filter(record__contains="changed").values_list("unit", flat=True)
    assert sorted(changed) == ["alpha", "alpha", "beta", "beta"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_removals_whose_own_connection_is_refused_are_written_on_the_writers(
    helper_connections_refused,
):
    """The removals go on a connection of their own beside the rows; where the server
    refuses it (at its connection limit), the writing thread writes them on its own."""
    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"), kind="pypi")
    progress = Progress(SyncRun.objects.create(mirror=mirror, state=SyncRun.State.RUNNING))
    writer = BatchWriter(mirror, progress)
    _add_many(mirror, progress, writer, "alpha", 4)
    writer.flush()
    ingest = UnitIngest(
        mirror, "alpha", progress, writer=writer, known=KnownRows(mirror.pk, ["alpha"])
    )
    for i in range(2):  # 0 and 1 change, 2 and 3 are gone
        ingest.add(_record("alpha", f"alpha-{i}.tar.gz", '{"changed": true}'))
    ingest.finish()
    writer.flush()
    writer.close()
    assert helper_connections_refused == ["psm-removals"]
    assert not writer.failed
    removed = Package.objects.filter(removed=True).values_list("filename", flat=True)
    assert sorted(removed) == ["alpha-2.tar.gz", "alpha-3.tar.gz"]


def _row(filename: str, record: str, **changes) -> tuple:
    """A row of COLUMNS but the two timestamps."""
    from mirrors_app.sync.ingest import COLUMNS

    values = dict(
        channel_id=1,
        mirror_id=2,
        unit="linux-64",
        filename=filename,
        name="alpha",
        version="1.0",
        sha256="ab" * 32,
        md5="",
        size=123,
        upstream_url=f"https://example.org/linux-64/{filename}",
        record=record,
        entry_digest=-(2**63),
        on_demand=True,
        removed=False,
        error="",
        excluded_reason="",
        would_exclude_reason="",
    )
    values.update(changes)
    return tuple(values[column] for column in COLUMNS[:-2])


@postgres_only
def test_a_binary_copy_stores_every_value_as_given():
    """The writer's COPY (binary) stores each value as the row holds it: characters the text
    format escapes, NULLs, booleans, non-ASCII text, 64-bit integers at both ends."""
    from mirrors_app.sync.ingest import COLUMNS, copy_statement, write_copy

    rows = [
        _row("alpha-1.0-0.conda", '{"name":"alpha","depends":["b >=1"]}'),
        _row("alpha-1.1-0.conda", '{"license":"a\\\\b \\"q\\" \\\\n"}', name="back\\slash"),
        _row("alpha-1.2-0.conda", "tab\there\nnew\rline", version="1.2\t", error="x\ny"),
        _row("alpha-1.3-0.conda", '{"s":"ünïcødé ☃ 𝄞"}', size=None, mirror_id=None),
        _row("alpha-1.4-0.conda", "{}", on_demand=False, removed=True, entry_digest=2**63 - 1),
        _row("alpha-1.5-0.conda", "\\N", excluded_reason="\\.", would_exclude_reason="\\"),
    ]
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE psm_rows AS SELECT {', '.join(COLUMNS)} "
            "FROM channels_app_package WITH NO DATA"
        )
        with cursor.copy(copy_statement("psm_rows")) as copy:
            write_copy(copy, rows, now)
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM psm_rows ORDER BY filename")
        stored = cursor.fetchall()
    assert [row[:-2] for row in stored] == rows
    assert all(row[-2:] == (now, now) for row in stored)


def _refused(row: tuple) -> str:
    """The reason a writer's COPY of `row` is refused with."""
    from mirrors_app.sync.ingest import _reason, copy_statement, write_copy

    with pytest.raises(DatabaseError) as refused, transaction.atomic():
        with connection.cursor() as cursor, connection.wrap_database_errors:
            cursor.execute(
                "CREATE TEMP TABLE psm_rows AS SELECT * FROM channels_app_package WITH NO DATA"
            )
            with cursor.copy(copy_statement("psm_rows")) as copy:
                write_copy(copy, [row], timezone.now())
    return _reason(refused.value)


@postgres_only
def test_a_value_the_database_cannot_store_is_named_in_the_reason():
    assert "NUL" in _refused(_row("a-1-0.conda", "bad \x00 byte"))
    assert _refused(_row("a-1-0.conda", "{}", md5="x" * 33)) == (
        "value too long for type character varying(32)"
    )

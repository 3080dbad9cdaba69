"""Batched writes across units: one refused value sinks only its own unit."""

from __future__ import annotations

import pytest

from channels_app.formats import PackageRecord
from channels_app.models import Package
from mirrors_app.models import SyncRun
from mirrors_app.sync.ingest import BatchWriter, KnownRows, UnitIngest
from mirrors_app.sync.progress import Progress
from tests.factories import ChannelFactory, MirrorFactory

pytestmark = pytest.mark.django_db


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

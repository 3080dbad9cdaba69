"""Publishing at scale: rows streamed ahead of the rendering, pages stored in batches and
their published-file rows COPYed in, with the same files as a page-by-page publish gives."""

from __future__ import annotations

import threading

import orjson
import pytest
from django.db import connection
from django.db.models import F

from channels_app import publishing, row_streams, storage
from channels_app.formats.pypi import HTML_TYPE, JSON_TYPE
from channels_app.formats.pypi_pages import render_project, render_root
from channels_app.models import Artifact, Channel, Package, PublishedFile
from channels_app.publishing import channel_publish
from channels_app.row_streams import stream_rows
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db


def _document(project: str, filename: str, n: int) -> str:
    return orjson.dumps(
        {"filename": filename, "hashes": {"sha256": f"{n:064x}"}, "requires-python": ">=3.8"}
    ).decode()


def _pypi_channel(projects: int, files: int = 3) -> Channel:
    channel = ChannelFactory(name="py", kind="pypi")
    Package.objects.bulk_create(
        Package(
            channel=channel, unit=f"proj-{p:03d}", filename=f"proj_{p:03d}-1.0.{f}.tar.gz",
            name=f"proj-{p:03d}", version=f"1.0.{f}", on_demand=True,
            record=_document(f"proj-{p:03d}", f"proj_{p:03d}-1.0.{f}.tar.gz", p * files + f),
            upstream_url=f"https://files.example/proj_{p:03d}-1.0.{f}.tar.gz",
        )
        for p in range(projects)
        for f in range(files)
    )  # fmt: skip
    return channel


def _published(channel: Channel) -> dict[str, tuple[bytes, str]]:
    found = {}
    for row in PublishedFile.objects.filter(channel=channel).select_related("artifact"):
        with storage.open_artifact(row.artifact) as stored:
            data = stored.read()
        assert row.artifact.size == len(data)
        assert row.artifact.sha256 == storage.hashlib.sha256(data).hexdigest()
        found[row.path] = (data, row.content_type)
    return found


def _expected(channel: Channel) -> dict[str, tuple[bytes, str]]:
    """Every page rendered on its own from the channel's rows: the straightforward publish."""
    expected, projects = {}, []
    for unit in sorted(set(Package.objects.filter(channel=channel).values_list("unit", flat=True))):
        rows = Package.objects.filter(channel=channel, unit=unit, removed=False)
        page_html, page_json = render_project(unit, rows.values_list("filename", "record"))
        expected[f"simple/{unit}/index.html"] = (page_html, HTML_TYPE)
        expected[f"simple/{unit}/index.json"] = (page_json, JSON_TYPE)
        projects.append(unit)
    root_html, root_json = render_root(projects)
    expected["simple/index.html"] = (root_html, HTML_TYPE)
    expected["simple/index.json"] = (root_json, JSON_TYPE)
    return expected


def test_a_publish_stores_exactly_the_pages_a_page_by_page_publish_gives(monkeypatch):
    monkeypatch.setattr(row_streams, "READ_AHEAD_ROWS", 7)  # many read-ahead batches
    monkeypatch.setattr(publishing.Rendered, "BATCH", 5)  # and storing batches
    channel = _pypi_channel(40)
    # One page already stored (an artifact that exists): published again, not duplicated.
    storage.put_bytes(_expected(channel)["simple/proj-001/index.json"][0])
    assert channel_publish(channel=channel)
    assert _published(channel) == _expected(channel)
    assert Artifact.objects.count() == len(_expected(channel))

    # An incremental publish: the changed project's pages and the list replaced, the rest kept.
    before = dict(PublishedFile.objects.filter(channel=channel).values_list("path", "pk"))
    Package.objects.create(
        channel=channel, unit="proj-007", filename="proj_007-2.0.tar.gz", name="proj-007",
        version="2.0", on_demand=True, record=_document("proj-007", "proj_007-2.0.tar.gz", 999),
        upstream_url="https://files.example/proj_007-2.0.tar.gz",
    )  # fmt: skip
    Channel.objects.filter(pk=channel.pk).update(content_version=F("content_version") + 1)
    assert channel_publish(channel=channel)
    assert _published(channel) == _expected(channel)
    after = dict(PublishedFile.objects.filter(channel=channel).values_list("path", "pk"))
    replaced = {path for path in after if after[path] != before[path]}
    assert replaced == {
        "simple/proj-007/index.html",
        "simple/proj-007/index.json",
        "simple/index.html",
        "simple/index.json",
    }
    # Everything again: every page's artifact exists already and is published as it is.
    artifacts = Artifact.objects.count()
    assert channel_publish(channel=channel, force=True)
    assert _published(channel) == _expected(channel)
    assert Artifact.objects.count() == artifacts


def test_a_page_that_cannot_be_stored_publishes_nothing(monkeypatch):
    channel = _pypi_channel(5)

    def full(items):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "put_many", full)
    with pytest.raises(OSError, match="No space"):
        channel_publish(channel=channel)
    assert not PublishedFile.objects.filter(channel=channel).exists()
    channel.refresh_from_db()
    assert channel.published_at is None


def _read_ahead_threads() -> int:
    return sum(thread.name == "psm-read-ahead" for thread in threading.enumerate())


def test_streamed_rows_come_in_order_across_read_ahead_batches(monkeypatch):
    monkeypatch.setattr(row_streams, "READ_AHEAD_ROWS", 4)
    channel = _pypi_channel(10)
    rows = Package.objects.filter(channel=channel).order_by("unit", "filename")
    columns = rows.values_list("unit", "filename", "record")
    streamed = list(stream_rows(columns))
    # PostgreSQL's rows hold their record as bytes (no decoding), SQLite's as text.
    as_text = [(u, f, r if isinstance(r, str) else r.decode()) for u, f, r in streamed]
    assert as_text == list(columns)
    assert _read_ahead_threads() == 0


def test_a_stream_left_midway_stops_its_reader_and_frees_the_connection(monkeypatch):
    monkeypatch.setattr(row_streams, "READ_AHEAD_ROWS", 2)
    monkeypatch.setattr(row_streams, "READ_AHEAD_BATCHES", 1)
    channel = _pypi_channel(10)
    stream = stream_rows(Package.objects.filter(channel=channel).values_list("unit", "filename"))
    assert next(stream)[0] == "proj-000"
    stream.close()
    assert _read_ahead_threads() == 0
    with connection.cursor() as cursor:  # the connection still answers
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_failing_read_ahead_raises_in_the_reader():
    class Broken:
        def fetchmany(self, size):
            raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError, match="connection lost"):
        list(row_streams._read_ahead(Broken()))
    assert _read_ahead_threads() == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's pg_indexes")
def test_a_published_file_row_enters_three_indexes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s",
            [PublishedFile._meta.db_table],
        )
        names = sorted(name for (name,) in cursor.fetchall())
    # The key, the path's uniqueness in its channel (which finds a channel's files), and the
    # artifact (garbage collection asks which artifacts are published).
    assert len(names) == 3
    assert "published_file_unique" in names
    assert any("artifact_id" in name for name in names)

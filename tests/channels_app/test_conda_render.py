"""Rendering a conda channel from the database: the sections come straight from a COPY of the
rows (`PackageIndexSource.json_members`), which must give the very bytes the row-by-row
rendering gives."""

from __future__ import annotations

import io
from contextlib import contextmanager

import orjson
import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from channels_app import publishing, storage
from channels_app.formats import conda_render
from channels_app.formats.conda_render import render_channel
from channels_app.models import Channel, Package, PublishedFile
from channels_app.publishing import PackageIndexSource
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db

RECORDS = {
    "alpha-1.0-0.tar.bz2": {"name": "alpha", "version": "1.0", "license": "MIT"},
    "alpha-1.1-0.conda": {"name": "alpha", "version": "1.1", "depends": ["python >=3"]},
    "beta-2.0-py_0.tar.bz2": {
        "name": "beta",
        "version": "2.0",
        "license": 'Ünïcode ☃ "quoted" \\ / \u2028 tab\there\nline',
        "nested": {"a": [1, 2.5, None, True], "b": {}},
    },
    "beta_x-2.0-0.conda": {"name": "beta_x", "version": "2.0", "big": 2**63 - 1},
    "z+name-1!2.0-0.conda": {"name": "z+name", "version": "1!2.0"},
}


class RowByRow:
    """The channel's source without the ready-made members: the straightforward rendering."""

    def __init__(self, source: PackageIndexSource) -> None:
        self.source = source

    def units(self):
        return self.source.units()

    def documents(self, unit, suffix=""):
        return self.source.documents(unit, suffix)

    def unit_extras(self, unit):
        return self.source.unit_extras(unit)


def _channel(records: dict, unit: str = "linux-64"):
    channel = ChannelFactory(kind="conda")
    Package.objects.bulk_create(
        Package(
            channel=channel,
            unit=unit,
            filename=filename,
            name=record["name"],
            version=record["version"],
            record=orjson.dumps(record).decode(),
            on_demand=True,
        )
        for filename, record in records.items()
    )
    return channel


def _render(source) -> dict[str, bytes]:
    files: dict[str, bytes] = {}

    @contextmanager
    def emit(path, content_type):
        out = io.BytesIO()
        yield out
        files[path] = out.getvalue()

    render_channel(source, emit)
    return files


def test_sections_from_a_copy_are_the_rows_rendered_one_by_one():
    channel = _channel(RECORDS)
    _channel({"other-1-0.conda": {"name": "other", "version": "1"}})  # another channel
    Package.objects.filter(filename="alpha-1.0-0.tar.bz2").update(removed=True)
    source = PackageIndexSource(channel)
    for suffix in (".tar.bz2", ".conda", ""):
        copied = b"".join(source.json_members("linux-64", suffix))
        one_by_one = b",".join(
            orjson.dumps(f) + b":" + bytes(r) for f, r in source.documents("linux-64", suffix)
        )
        assert copied == one_by_one
    files = _render(source)
    assert files == _render(RowByRow(source))
    document = orjson.loads(files["linux-64/repodata.json"])
    assert list(document["packages.conda"]) == [
        "alpha-1.1-0.conda",
        "beta_x-2.0-0.conda",
        "z+name-1!2.0-0.conda",
    ]
    assert document["packages"] == {"beta-2.0-py_0.tar.bz2": RECORDS["beta-2.0-py_0.tar.bz2"]}
    assert orjson.loads(files["channeldata.json"])["packages"] == {
        name: {"subdirs": ["linux-64"]} for name in ("alpha", "beta", "beta_x", "z+name")
    }


def test_an_empty_section_and_an_empty_channel_render_alike():
    source = PackageIndexSource(_channel({"a-1-0.conda": {"name": "a", "version": "1"}}))
    assert _render(source) == _render(RowByRow(source))
    assert b"".join(source.json_members("linux-64", ".tar.bz2")) == b""
    empty = PackageIndexSource(ChannelFactory(kind="conda"))
    assert _render(empty) == _render(RowByRow(empty))


def test_many_rows_come_in_blocks_joined_as_one():
    records = {f"p-{i:05d}-0.conda": {"name": "p", "version": str(i)} for i in range(25_000)}
    source = PackageIndexSource(_channel(records))
    blocks = list(source.json_members("linux-64", ".conda"))
    assert len(blocks) == 3
    assert orjson.loads(b"{" + b"".join(blocks) + b"}") == records


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_a_record_holding_a_line_break_stops_the_render():
    channel = _channel({"a-1-0.conda": {"name": "a", "version": "1"}})
    Package.objects.update(record='{"name": "a",\n"version": "1"}')  # not compact JSON
    with pytest.raises(ValueError, match="line break"):
        list(PackageIndexSource(channel).json_members("linux-64", ".conda"))


# --- A publish after a few changes: the last index with what changed spliced in -----------


def _published(channel) -> dict[str, bytes]:
    files = {}
    for published in PublishedFile.objects.filter(channel=channel).select_related("artifact"):
        with storage.open_artifact(published.artifact) as handle:
            files[published.path] = handle.read()
    return files


def _changed(channel) -> None:
    Channel.objects.filter(pk=channel.pk).update(content_version=F("content_version") + 1)
    channel.refresh_from_db()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="splices on PostgreSQL")
def test_a_publish_splices_what_changed_and_gives_the_bytes_of_a_full_render(monkeypatch):
    records = {f"p{i:03d}-1.0-{i}{'.conda' if i % 2 else '.tar.bz2'}": i for i in range(40)}
    channel = _channel(
        {f: {"name": f.split("-")[0], "version": "1.0", "n": n} for f, n in records.items()}
    )
    _channel({"q-1-0.conda": {"name": "q", "version": "1"}}, unit="noarch").delete()
    Package.objects.create(
        channel=channel,
        unit="noarch",
        filename="q-1-0.conda",
        name="q",
        version="1",
        record=orjson.dumps({"name": "q", "version": "1"}).decode(),
        on_demand=True,
    )
    Channel.objects.filter(pk=channel.pk).update(
        index_extras={"1": {"linux-64": {"removed": ["gone-1-0.conda"]}}}
    )
    channel.refresh_from_db()
    assert publishing.channel_publish(channel=channel)
    spliced = []
    real = conda_render._spliced
    monkeypatch.setattr(conda_render, "_spliced", lambda *a: spliced.append(1) or real(*a))
    now = timezone.now()
    rows = Package.objects.filter(channel=channel)
    rows.filter(filename="p003-1.0-3.conda").update(removed=True, updated_at=now)
    rows.filter(filename="p004-1.0-4.tar.bz2").update(excluded_reason="blocked", updated_at=now)
    rows.filter(filename="p000-1.0-0.tar.bz2").update(
        record=orjson.dumps({"name": "p000", "version": "1.0", "n": "changed"}).decode(),
        updated_at=now,
    )
    rows.filter(filename="p039-1.0-39.conda").update(updated_at=now)  # touched, the same
    for filename in ("a-1-0.conda", "p010-2.0-0.tar.bz2", "zz-1-0.tar.bz2", "zz-2-0.conda"):
        Package.objects.create(
            channel=channel,
            unit="linux-64",
            filename=filename,
            name=filename.split("-")[0],
            version="1",
            record=orjson.dumps({"name": filename, "x": "é\\"}).decode(),
            on_demand=True,
        )
    Package.objects.create(
        channel=channel,
        unit="noarch",
        filename="r-1-0.conda",
        name="r",
        version="1",
        record="{}",
        on_demand=True,
    )
    _changed(channel)
    assert publishing.channel_publish(channel=channel)
    assert len(spliced) == 4  # both sections of both subdirs
    after_splice = _published(channel)
    assert publishing.channel_publish(channel=channel, force=True)  # every row rendered
    assert len(spliced) == 4
    assert _published(channel) == after_splice
    document = orjson.loads(after_splice["linux-64/repodata.json"])
    assert "p003-1.0-3.conda" not in document["packages.conda"]
    assert "p004-1.0-4.tar.bz2" not in document["packages"]
    assert document["packages"]["p000-1.0-0.tar.bz2"]["n"] == "changed"
    assert list(document["packages"])[-1] == "zz-1-0.tar.bz2"
    assert list(document["packages.conda"])[0] == "a-1-0.conda"
    assert document["removed"] == ["gone-1-0.conda"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="splices on PostgreSQL")
def test_a_withdrawn_or_unordered_index_is_rendered_from_every_row(monkeypatch):
    channel = _channel(RECORDS)
    assert publishing.channel_publish(channel=channel)
    spliced = []
    real = conda_render._spliced
    monkeypatch.setattr(
        conda_render,
        "_spliced",
        lambda previous, *a: spliced.append(previous) or real(previous, *a),
    )
    publishing.channel_withdraw(channel=channel, paths=[("linux-64", "alpha-1.1-0.conda")])
    _changed(channel)
    assert publishing.channel_publish(channel=channel)  # the withdrawn file is back
    assert (
        "alpha-1.1-0.conda"
        in orjson.loads(_published(channel)["linux-64/repodata.json"])["packages.conda"]
    )
    # A collation that does not order names by code point: no splice either.
    monkeypatch.setattr(publishing, "CODE_POINT_COLLATIONS", frozenset())
    _changed(channel)
    assert publishing.channel_publish(channel=channel)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="splices on PostgreSQL")
def test_a_last_index_not_in_file_name_order_is_not_spliced(monkeypatch, tmp_path):
    channel = _channel(RECORDS)
    assert publishing.channel_publish(channel=channel)
    unordered = tmp_path / "repodata.json"
    unordered.write_bytes(b'{"packages": {"b-1-0.tar.bz2": {}, "a-1-0.tar.bz2": {}}}')
    monkeypatch.setattr(PackageIndexSource, "previous", lambda self, path: open(unordered, "rb"))
    _changed(channel)
    assert publishing.channel_publish(channel=channel)
    document = orjson.loads(_published(channel)["linux-64/repodata.json"])
    assert list(document["packages"]) == ["alpha-1.0-0.tar.bz2", "beta-2.0-py_0.tar.bz2"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="splices on PostgreSQL")
def test_a_section_with_many_changes_is_rendered_from_every_row(monkeypatch):
    channel = _channel(RECORDS)
    assert publishing.channel_publish(channel=channel)
    monkeypatch.setattr(conda_render, "SPLICED_AT_MOST", 1)
    spliced = []
    real = conda_render._spliced
    monkeypatch.setattr(
        conda_render, "_spliced", lambda previous, *a: spliced.append(1) or real(previous, *a)
    )
    Package.objects.filter(channel=channel, filename__endswith=".conda").update(
        updated_at=timezone.now()
    )
    Package.objects.filter(channel=channel, filename="alpha-1.1-0.conda").update(removed=True)
    Package.objects.filter(channel=channel, filename="beta-2.0-py_0.tar.bz2").update(
        updated_at=timezone.now(), removed=True
    )
    _changed(channel)
    assert publishing.channel_publish(channel=channel)
    assert len(spliced) == 3  # `packages` of linux-64 (one change) and noarch's, not the other
    after = _published(channel)
    assert publishing.channel_publish(channel=channel, force=True)
    assert _published(channel) == after
    document = orjson.loads(after["linux-64/repodata.json"])
    assert list(document["packages"]) == ["alpha-1.0-0.tar.bz2"]
    assert list(document["packages.conda"]) == ["beta_x-2.0-0.conda", "z+name-1!2.0-0.conda"]

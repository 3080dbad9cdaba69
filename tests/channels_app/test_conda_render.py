"""Rendering a conda channel from the database: the sections come straight from a COPY of the
rows (`PackageIndexSource.json_members`), which must give the very bytes the row-by-row
rendering gives."""

from __future__ import annotations

import orjson
import pytest
from django.db import connection

from channels_app.models import Package
from channels_app.publishing import PackageIndexSource
from tests.channels_app import conda_rendered
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


def _copies() -> bool:
    """Whether sections come from a COPY (PostgreSQL); elsewhere the rows are rendered alone."""
    return connection.vendor == "postgresql"


def test_sections_from_a_copy_are_the_rows_rendered_one_by_one():
    channel = _channel(RECORDS)
    _channel({"other-1-0.conda": {"name": "other", "version": "1"}})  # another channel
    Package.objects.filter(filename="alpha-1.0-0.tar.bz2").update(removed=True)
    source = PackageIndexSource(channel)
    for suffix in (".tar.bz2", ".conda", "") if _copies() else ():
        copied = b"".join(source.json_members("linux-64", suffix))
        one_by_one = b",".join(
            orjson.dumps(f) + b":" + bytes(r) for f, r in source.documents("linux-64", suffix)
        )
        assert copied == one_by_one
    files = conda_rendered(source)
    assert files == conda_rendered(RowByRow(source))
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
    assert conda_rendered(source) == conda_rendered(RowByRow(source))
    if _copies():
        assert b"".join(source.json_members("linux-64", ".tar.bz2")) == b""
    empty = PackageIndexSource(ChannelFactory(kind="conda"))
    assert conda_rendered(empty) == conda_rendered(RowByRow(empty))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_many_rows_come_in_blocks_joined_as_one():
    records = {f"p-{i:05d}-0.conda": {"name": "p", "version": str(i)} for i in range(25_000)}
    source = PackageIndexSource(_channel(records))
    blocks = list(source.json_members("linux-64", ".conda"))
    assert len(blocks) == 3
    assert orjson.loads(b"{" + b"".join(blocks) + b"}") == records


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_a_record_holding_a_line_break_stops_theconda_rendered():
    channel = _channel({"a-1-0.conda": {"name": "a", "version": "1"}})
    Package.objects.update(record='{"name": "a",\n"version": "1"}')  # not compact JSON
    with pytest.raises(ValueError, match="line break"):
        list(PackageIndexSource(channel).json_members("linux-64", ".conda"))

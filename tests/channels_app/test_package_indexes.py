"""The package table's indexes: what each synced row has to maintain."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels_app.models import BY_MIRROR, Package
from channels_app.querysets import has_rows
from tests.factories import MirrorFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's pg_indexes"),
]


def _indexes() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
            [Package._meta.db_table],
        )
        return dict(cursor.fetchall())


def test_a_passive_allowed_row_enters_six_indexes():
    indexes = _indexes()
    partial = {name for name, definition in indexes.items() if " WHERE " in definition}
    assert partial == {
        "package_served_name",
        "package_artifact",
        "package_sidecar",
        "package_marked",
        "package_removed",
    }
    # The rest: the key, the file's uniqueness, the channel's names, the mirror's units, and
    # the transaction that last wrote it (what a publish splices: `splice_changes`).
    assert sorted(indexes.keys() - partial) == [
        "channels_app_package_pkey",
        "package_channel_name",
        "package_file_unique_in_channel",
        "package_mirror_unit",
        "package_written",
    ]
    assert "IS NOT NULL" in indexes["package_artifact"]
    assert "would_exclude_reason" in indexes["package_marked"]
    # Only rows gone upstream, until the next publish deletes them.
    assert indexes["package_removed"].endswith("WHERE removed")


def test_a_mirror_s_rows_are_asked_for_along_its_index_whatever_lies_before_them():
    """Another mirror's rows stored first: PostgreSQL would answer `exists()` by scanning
    them all for the first of this mirror's (66 ms for 600,000); `has_rows` probes the
    index."""
    first, second = MirrorFactory(), MirrorFactory()
    table = Package._meta.db_table
    with connection.cursor() as cursor:
        for mirror in (first, second):
            cursor.execute(
                f"INSERT INTO {table} (channel_id, mirror_id, unit, filename, name, version, "
                "sha256, md5, upstream_url, record, entry_digest, on_demand, removed, error, "
                "excluded_reason, would_exclude_reason, added_at, updated_at) "
                "SELECT %s, %s, 'linux-64', 'f' || i, 'f', '1', '', '', '', '{}', 0, true, "
                "false, '', '', '', now(), now() FROM generate_series(1, 20000) AS i",
                [mirror.channel_id, mirror.pk],
            )
        cursor.execute(f"ANALYZE {table}")
    rows = Package.objects.filter(mirror_id=second.pk)
    with CaptureQueriesContext(connection) as queries:
        assert has_rows(rows, *BY_MIRROR)
    (query,) = queries.captured_queries
    assert "Seq Scan" not in _plan_of(query["sql"])
    assert not has_rows(Package.objects.filter(mirror_id=second.pk + 1), *BY_MIRROR)


def _plan_of(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(line for (line,) in cursor.fetchall())

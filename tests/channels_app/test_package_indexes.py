"""The package table's indexes: what each synced row has to maintain."""

from __future__ import annotations

import pytest
from django.db import connection

from channels_app.models import Package

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

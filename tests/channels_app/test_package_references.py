"""A package's channel and mirror: checked once per statement (triggers), with the promise of
the foreign keys they replace (migration 0016_package_reference_checks)."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from channels_app.models import Channel, Package
from mirrors_app.models import Mirror
from tests.factories import MirrorFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's triggers"),
]
TABLE = Package._meta.db_table
MISSING = 2**62


def _package(channel_id: int, mirror_id: int | None, filename: str = "a-1-0.conda") -> Package:
    return Package(
        channel_id=channel_id, mirror_id=mirror_id, unit="noarch", filename=filename,
        name="a", version="1",
    )  # fmt: skip


def _insert_rows(rows: list[tuple[int, int | None, str]]) -> None:
    """One statement inserting every row (as a sync's COPY or INSERT ... SELECT does)."""
    values = ", ".join(["(%s, %s, 'noarch', %s, 'a', '1', '', '', '', '', 0, false, false, "
                        "'', '', '', now(), now())"] * len(rows))  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (channel_id, mirror_id, unit, filename, name, version, sha256,"
            " md5, upstream_url, record, entry_digest, on_demand, removed, error,"
            " excluded_reason, would_exclude_reason, added_at, updated_at) VALUES " + values,
            [value for row in rows for value in row],
        )


def test_packages_of_existing_channels_and_mirrors_are_written_in_one_statement():
    mirror = MirrorFactory()
    _insert_rows([(mirror.channel_id, mirror.pk, f"a-{i}-0.conda") for i in range(50)])
    _insert_rows([(mirror.channel_id, None, "b-1-0.conda")])  # no mirror: an upload
    assert Package.objects.filter(channel_id=mirror.channel_id).count() == 51


@pytest.mark.parametrize("missing", ["channel", "mirror"])
def test_a_statement_naming_a_missing_channel_or_mirror_writes_nothing(missing):
    mirror = MirrorFactory()
    bad = (MISSING, mirror.pk) if missing == "channel" else (mirror.channel_id, MISSING)
    rows = [(mirror.channel_id, mirror.pk, f"a-{i}-0.conda") for i in range(10)]
    with pytest.raises(IntegrityError, match=f"_{missing}"), transaction.atomic():
        _insert_rows([*rows, (*bad, "bad-1-0.conda")])
    with pytest.raises(IntegrityError), transaction.atomic():
        _package(*bad).save()
    assert not Package.objects.exists()


def test_moving_a_package_to_a_missing_mirror_fails_and_other_updates_cost_no_check():
    mirror = MirrorFactory()
    package = _package(mirror.channel_id, mirror.pk)
    package.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        Package.objects.filter(pk=package.pk).update(mirror_id=MISSING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Package.objects.filter(pk=package.pk).update(channel_id=MISSING)
    other = MirrorFactory(channel=mirror.channel, name="other")
    Package.objects.filter(pk=package.pk).update(mirror_id=other.pk, excluded_reason="x")
    Package.objects.filter(pk=package.pk).update(mirror_id=None)
    assert Package.objects.get(pk=package.pk).mirror_id is None


def test_a_channel_or_mirror_packages_name_cannot_be_deleted_but_djangos_delete_empties_it():
    mirror = MirrorFactory()
    _package(mirror.channel_id, mirror.pk).save()
    for table, pk in ((Mirror._meta.db_table, mirror.pk), (Channel._meta.db_table, mirror.channel_id)):  # fmt: skip
        with pytest.raises(IntegrityError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pk])
    mirror.delete()  # SET_NULL first: the package stays, without its mirror
    assert Package.objects.get().mirror_id is None
    Channel.objects.get(pk=mirror.channel_id).delete()  # CASCADE first
    assert not Package.objects.exists()


def _dsn() -> str:
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"],
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first", ["insert", "delete"])
def test_a_delete_racing_an_insert_leaves_no_package_naming_a_missing_mirror(first):
    """Both sides lock the mirror's row as a foreign key does: whichever comes second waits
    for the first to commit, then fails."""
    mirror = MirrorFactory()
    channel_id, mirror_id = mirror.channel_id, mirror.pk
    insert = (
        f"INSERT INTO {TABLE} (channel_id, mirror_id, unit, filename, name, version, sha256, "
        "md5, upstream_url, record, entry_digest, on_demand, removed, error, excluded_reason, "
        "would_exclude_reason, added_at, updated_at) VALUES (%s, %s, 'noarch', 'a-1-0.conda', "
        "'a', '1', '', '', '', '', 0, false, false, '', '', '', now(), now())"
    )
    delete = f"DELETE FROM {Mirror._meta.db_table} WHERE id = %s"
    statements = {"insert": (insert, [channel_id, mirror_id]), "delete": (delete, [mirror_id])}
    second = "delete" if first == "insert" else "insert"
    errors: list[Exception] = []
    with psycopg.connect(_dsn()) as one, psycopg.connect(_dsn()) as two:
        one.execute(*statements[first])  # holds its lock until it commits

        def run_second() -> None:
            try:
                with two.transaction():
                    two.execute(*statements[second])
            except psycopg.errors.ForeignKeyViolation as exc:
                errors.append(exc)

        thread = threading.Thread(target=run_second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # waiting for the first transaction
        one.commit()
        thread.join(10)
    assert len(errors) == 1
    if first == "insert":
        assert Mirror.objects.filter(pk=mirror_id).exists()
        assert Package.objects.filter(mirror_id=mirror_id).count() == 1
    else:
        assert not Mirror.objects.filter(pk=mirror_id).exists()
        assert not Package.objects.exists()

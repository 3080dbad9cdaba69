"""The package table tells what changed since a render, so that a publish need not scan a
subdir's rows to find out (`splice_changes.changes_told`). PostgreSQL only (SQLite never
splices); maintained by the database, so no write of any code path escapes it:

- `written_xid`: the id of the transaction that last wrote the row (inserted: the column's
  default; updated: a trigger), beside an index on (channel, unit, written_xid);
- `psm_package_gone`: a row for every row deleted (a statement's trigger), or moved to another
  channel, unit or file name (the old place), with whether it was served and when it was last
  written; and one with no channel for a TRUNCATE (every file then rendered whole).

A publish forgets the entries its renders have seen (`publishing.channel_publish`).

Rows of conda records that hold an object under a package file's name are deleted: a sync
now refuses them (`conda_records.entry_record`), as a splice could take the copy for the
entry it names."""

from django.db import migrations
from django.db.models import Q

PACKAGE = "channels_app_package"
CHANNEL = "channels_app_channel"
SERVED = "(NOT {row}.removed AND {row}.excluded_reason = '' AND ({row}.artifact_id IS NOT NULL OR {row}.on_demand))"
GONE_COLUMNS = "channel_id, unit, filename, name, served, written_xid"

CREATE = [
    f"ALTER TABLE {PACKAGE} ADD COLUMN written_xid bigint NOT NULL DEFAULT txid_current()",
    f"CREATE INDEX package_written ON {PACKAGE} (channel_id, unit, written_xid)",
    "CREATE TABLE psm_package_gone (channel_id bigint, unit varchar(100), "
    "filename varchar(255), name varchar(255), served boolean NOT NULL, "
    "written_xid bigint NOT NULL, gone_xid bigint NOT NULL DEFAULT txid_current())",
    "CREATE INDEX psm_package_gone_since ON psm_package_gone (channel_id, unit, gone_xid)",
    """
CREATE FUNCTION psm_package_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.written_xid := txid_current();
    RETURN NEW;
END
$$""",
    f"CREATE TRIGGER psm_package_written BEFORE UPDATE ON {PACKAGE} "
    "FOR EACH ROW EXECUTE FUNCTION psm_package_written()",
    f"""
CREATE FUNCTION psm_package_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO psm_package_gone ({GONE_COLUMNS})
    SELECT g.channel_id, g.unit, g.filename, g.name, {SERVED.format(row="g")}, g.written_xid
    FROM gone_rows g;
    RETURN NULL;
END
$$""",
    f"CREATE TRIGGER psm_package_deleted AFTER DELETE ON {PACKAGE} "
    "REFERENCING OLD TABLE AS gone_rows FOR EACH STATEMENT EXECUTE FUNCTION psm_package_deleted()",
    f"""
CREATE FUNCTION psm_package_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO psm_package_gone ({GONE_COLUMNS}) VALUES (OLD.channel_id, OLD.unit,
        OLD.filename, OLD.name, {SERVED.format(row="OLD")}, OLD.written_xid);
    RETURN NULL;
END
$$""",
    f"CREATE TRIGGER psm_package_moved AFTER UPDATE OF channel_id, unit, filename ON {PACKAGE} "
    "FOR EACH ROW WHEN ((OLD.channel_id, OLD.unit, OLD.filename) IS DISTINCT FROM "
    "(NEW.channel_id, NEW.unit, NEW.filename)) EXECUTE FUNCTION psm_package_moved()",
    f"""
CREATE FUNCTION psm_package_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO psm_package_gone ({GONE_COLUMNS}) VALUES (NULL, NULL, NULL, NULL, true, 0);
    RETURN NULL;
END
$$""",
    f"CREATE TRIGGER psm_package_truncated AFTER TRUNCATE ON {PACKAGE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION psm_package_truncated()",
    # A deleted channel's entries are of no use to anyone (its rows went first, and told).
    """
CREATE FUNCTION psm_channel_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM psm_package_gone WHERE channel_id IN (SELECT id FROM gone_channels);
    RETURN NULL;
END
$$""",
    f"CREATE TRIGGER psm_channel_gone AFTER DELETE ON {CHANNEL} "
    "REFERENCING OLD TABLE AS gone_channels FOR EACH STATEMENT EXECUTE FUNCTION psm_channel_gone()",
]

DROP = [
    f"DROP TRIGGER IF EXISTS psm_channel_gone ON {CHANNEL}",
    f"DROP TRIGGER IF EXISTS psm_package_truncated ON {PACKAGE}",
    f"DROP TRIGGER IF EXISTS psm_package_moved ON {PACKAGE}",
    f"DROP TRIGGER IF EXISTS psm_package_deleted ON {PACKAGE}",
    f"DROP TRIGGER IF EXISTS psm_package_written ON {PACKAGE}",
    "DROP FUNCTION IF EXISTS psm_channel_gone()",
    "DROP FUNCTION IF EXISTS psm_package_truncated()",
    "DROP FUNCTION IF EXISTS psm_package_moved()",
    "DROP FUNCTION IF EXISTS psm_package_deleted()",
    "DROP FUNCTION IF EXISTS psm_package_written()",
    "DROP TABLE IF EXISTS psm_package_gone",
    "DROP INDEX IF EXISTS package_written",
    f"ALTER TABLE {PACKAGE} DROP COLUMN IF EXISTS written_xid",
]


def _run(statements: list[str]):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run


def delete_nesting_records(apps, schema_editor) -> None:
    Package = apps.get_model("channels_app", "Package")
    nests = Q(record__contains='.conda":{') | Q(record__contains='.tar.bz2":{')
    Package.objects.filter(nests, channel__kind="conda").delete()


class Migration(migrations.Migration):
    dependencies = [("channels_app", "0020_collect_ids_aggregate")]

    operations = [
        migrations.RunPython(_run(CREATE), _run(DROP)),
        migrations.RunPython(delete_nesting_records, migrations.RunPython.noop),
    ]

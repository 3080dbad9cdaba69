"""PostgreSQL notifies `psm_serving` when a transaction that wrote channels or published files
commits: the per-process index cache (channels_app.index_cache) forgets what it resolved."""

from django.db import migrations

TABLES = ("channels_app_channel", "channels_app_publishedfile")

FUNCTION = """
CREATE OR REPLACE FUNCTION psm_serving_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Delivered at commit, once per transaction however many statements ran (the payload,
    -- the transaction's id, is the same for all of them).
    PERFORM pg_notify('psm_serving', pg_current_xact_id()::text);
    RETURN NULL;
END
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # no LISTEN elsewhere: the cache is off (index_cache.enabled)
    schema_editor.execute(FUNCTION)
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER psm_serving_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION psm_serving_changed()"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS psm_serving_changed ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS psm_serving_changed()")


class Migration(migrations.Migration):
    dependencies = [("channels_app", "0011_package_would_exclude_reason")]

    operations = [migrations.RunPython(create, drop)]

"""`psm_collect_ids(bigint)`: an `array_agg` of ids that PostgreSQL can run in parallel (its
partial arrays combined by `array_cat`; before PostgreSQL 16 the built-in one has no way to
combine them). A publish's pass over a subdir's rows (`splice_changes.changes_since`) collects the
ids of the rows changed since the last render with it, on as many processes as it is given.
Nothing on SQLite, which never splices."""

from django.db import migrations

CREATE = (
    "CREATE OR REPLACE AGGREGATE psm_collect_ids(bigint) (SFUNC = array_append, "
    "STYPE = bigint[], COMBINEFUNC = array_cat, PARALLEL = SAFE)"
)
DROP = "DROP AGGREGATE IF EXISTS psm_collect_ids(bigint)"


def _run(sql: str):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0019_package_mirror_unit_covering"),
    ]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]

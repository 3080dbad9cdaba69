"""A package's channel and mirror are checked once per statement, not once per row.

The foreign keys on `channel_id` and `mirror_id` ran two checks per inserted row at commit
(600,000 rows of a conda-forge subdir: 1,200,000 lookups and row locks, ~40% of PostgreSQL's
work in a first sync). They are replaced by triggers that keep the same promise:

- a statement that inserts packages (COPY, INSERT ... SELECT, the ORM) locks the channels and
  mirrors its rows name (FOR KEY SHARE, as a foreign key does) and fails if one is missing: one
  check per distinct value, from the statement's transition table;
- an update that moves a package to another channel or mirror is checked row by row (rare: a
  `WHEN` clause skips every other update at no cost);
- deleting a channel or a mirror that packages still name fails, as the foreign keys' NO
  ACTION did (Django's CASCADE and SET_NULL empty them first).

Both sides lock as the foreign keys did, so a delete racing an insert waits for it and then
fails (READ COMMITTED, Django's isolation level: each check sees what committed before it).
The checks are immediate, not deferred to commit: Django writes a package after its channel
and mirror, and empties them before deleting either. SQLite gets row triggers that refuse
the same inserts and updates; there, deleting a channel or a mirror does to its packages what
the model's `on_delete` says.
"""

from django.db import migrations, models

PACKAGE = "channels_app_package"
CHANNEL = "channels_app_channel"
MIRROR = "mirrors_app_mirror"
VIOLATION = "insert or update on table channels_app_package violates its reference to"

POSTGRESQL = f"""
CREATE FUNCTION psm_package_references_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    found bigint;
BEGIN
    SELECT count(DISTINCT channel_id) INTO wanted FROM new_rows;
    PERFORM 1 FROM {CHANNEL} c WHERE c.id IN (SELECT channel_id FROM new_rows)
        FOR KEY SHARE OF c;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < wanted THEN
        RAISE foreign_key_violation USING MESSAGE = '{VIOLATION} {CHANNEL}';
    END IF;
    SELECT count(DISTINCT mirror_id) INTO wanted FROM new_rows;
    IF wanted > 0 THEN
        PERFORM 1 FROM {MIRROR} m WHERE m.id IN (SELECT mirror_id FROM new_rows)
            FOR KEY SHARE OF m;
        GET DIAGNOSTICS found = ROW_COUNT;
        IF found < wanted THEN
            RAISE foreign_key_violation USING MESSAGE = '{VIOLATION} {MIRROR}';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION psm_package_references_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {CHANNEL} c WHERE c.id = NEW.channel_id FOR KEY SHARE OF c;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = '{VIOLATION} {CHANNEL}';
    END IF;
    IF NEW.mirror_id IS NOT NULL THEN
        PERFORM 1 FROM {MIRROR} m WHERE m.id = NEW.mirror_id FOR KEY SHARE OF m;
        IF NOT FOUND THEN
            RAISE foreign_key_violation USING MESSAGE = '{VIOLATION} {MIRROR}';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION psm_package_referenced_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0]: the package column that names the deleted rows.
    IF TG_ARGV[0] = 'channel_id' AND EXISTS (
        SELECT 1 FROM {PACKAGE} p WHERE p.channel_id IN (SELECT id FROM old_rows)
    ) OR TG_ARGV[0] = 'mirror_id' AND EXISTS (
        SELECT 1 FROM {PACKAGE} p WHERE p.mirror_id IN (SELECT id FROM old_rows)
    ) THEN
        RAISE foreign_key_violation USING MESSAGE =
            'update or delete on table ' || TG_TABLE_NAME || ' leaves packages naming it';
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION psm_package_referenced_renumbered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[0] = 'channel_id' AND EXISTS (
        SELECT 1 FROM {PACKAGE} p WHERE p.channel_id = OLD.id
    ) OR TG_ARGV[0] = 'mirror_id' AND EXISTS (
        SELECT 1 FROM {PACKAGE} p WHERE p.mirror_id = OLD.id
    ) THEN
        RAISE foreign_key_violation USING MESSAGE =
            'update or delete on table ' || TG_TABLE_NAME || ' leaves packages naming it';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER psm_package_references_inserted AFTER INSERT ON {PACKAGE}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION psm_package_references_inserted();
CREATE TRIGGER psm_package_references_moved AFTER UPDATE OF channel_id, mirror_id ON {PACKAGE}
    FOR EACH ROW WHEN (
        OLD.channel_id IS DISTINCT FROM NEW.channel_id
        OR NEW.mirror_id IS NOT NULL AND OLD.mirror_id IS DISTINCT FROM NEW.mirror_id
    ) EXECUTE FUNCTION psm_package_references_moved();
CREATE TRIGGER psm_package_referenced_deleted AFTER DELETE ON {CHANNEL}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION psm_package_referenced_deleted('channel_id');
CREATE TRIGGER psm_package_referenced_deleted AFTER DELETE ON {MIRROR}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION psm_package_referenced_deleted('mirror_id');
CREATE TRIGGER psm_package_referenced_renumbered AFTER UPDATE OF id ON {CHANNEL}
    FOR EACH ROW WHEN (OLD.id <> NEW.id)
    EXECUTE FUNCTION psm_package_referenced_renumbered('channel_id');
CREATE TRIGGER psm_package_referenced_renumbered AFTER UPDATE OF id ON {MIRROR}
    FOR EACH ROW WHEN (OLD.id <> NEW.id)
    EXECUTE FUNCTION psm_package_referenced_renumbered('mirror_id');
"""

POSTGRESQL_DROP = f"""
DROP TRIGGER IF EXISTS psm_package_references_inserted ON {PACKAGE};
DROP TRIGGER IF EXISTS psm_package_references_moved ON {PACKAGE};
DROP TRIGGER IF EXISTS psm_package_referenced_deleted ON {CHANNEL};
DROP TRIGGER IF EXISTS psm_package_referenced_deleted ON {MIRROR};
DROP TRIGGER IF EXISTS psm_package_referenced_renumbered ON {CHANNEL};
DROP TRIGGER IF EXISTS psm_package_referenced_renumbered ON {MIRROR};
DROP FUNCTION IF EXISTS psm_package_references_inserted();
DROP FUNCTION IF EXISTS psm_package_references_moved();
DROP FUNCTION IF EXISTS psm_package_referenced_deleted();
DROP FUNCTION IF EXISTS psm_package_referenced_renumbered();
"""

_MISSING = (
    f"NOT EXISTS (SELECT 1 FROM {CHANNEL} WHERE id = NEW.channel_id) OR NEW.mirror_id IS NOT "
    f"NULL AND NOT EXISTS (SELECT 1 FROM {MIRROR} WHERE id = NEW.mirror_id)"
)
SQLITE = [
    f"CREATE TRIGGER psm_package_references_inserted BEFORE INSERT ON {PACKAGE} "
    f"WHEN {_MISSING} BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed'); END",
    f"CREATE TRIGGER psm_package_references_moved BEFORE UPDATE OF channel_id, mirror_id "
    f"ON {PACKAGE} WHEN {_MISSING} "
    "BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed'); END",
    # A deleted channel or mirror does to its packages what the model's `on_delete` says
    # (Django's own deletes have done it already): SQLite's triggers cannot wait for the end
    # of a transaction, and a flush deletes the channels before their packages.
    f"CREATE TRIGGER psm_package_referenced_channel_deleted AFTER DELETE ON {CHANNEL} "
    f"BEGIN DELETE FROM {PACKAGE} WHERE channel_id = OLD.id; END",
    f"CREATE TRIGGER psm_package_referenced_mirror_deleted AFTER DELETE ON {MIRROR} "
    f"BEGIN UPDATE {PACKAGE} SET mirror_id = NULL WHERE mirror_id = OLD.id; END",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {name}"
    for name in (
        "psm_package_references_inserted",
        "psm_package_references_moved",
        "psm_package_referenced_channel_deleted",
        "psm_package_referenced_mirror_deleted",
    )
]


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL)
    elif vendor == "sqlite":
        for statement in SQLITE:
            schema_editor.execute(statement)


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_DROP)
    elif vendor == "sqlite":
        for statement in SQLITE_DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0015_published_file_fewer_indexes"),
        ("mirrors_app", "0009_run_progress_totals"),
    ]

    operations = [
        migrations.AlterField(
            model_name="package",
            name="channel",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="packages",
                to="channels_app.channel",
            ),
        ),
        migrations.AlterField(
            model_name="package",
            name="mirror",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                help_text="The mirror that brought this package; kept when the mirror is deleted.",
                null=True,
                on_delete=models.deletion.SET_NULL,
                related_name="packages",
                to="mirrors_app.mirror",
            ),
        ),
        migrations.RunPython(create, drop),
    ]

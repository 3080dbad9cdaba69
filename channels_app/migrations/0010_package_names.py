"""Names that say what they hold: a package's `unit` (a conda subdir, a Python project or a
CRAN folder), the `entry_digest` of its upstream entry, and why it is excluded.

The database's unique constraint and (mirror, unit) index follow the renamed column by
themselves; only Django's record of them is rewritten (and the index's name)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0009_verification"),
    ]

    operations = [
        # The (mirror, subdir) index gets its new name while it still names `subdir` (SQLite
        # rebuilds an index to rename it), and leaves Django's state with the unique
        # constraint while the column is renamed; the database objects follow the column.
        migrations.RenameIndex(
            model_name="package", new_name="package_mirror_unit", old_name="package_mirror_subdir"
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="package", name="package_mirror_unit"),
                migrations.RemoveConstraint(
                    model_name="package", name="package_file_unique_in_channel"
                ),
            ]
        ),
        migrations.RenameField(model_name="package", old_name="subdir", new_name="unit"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="package",
                    index=models.Index(fields=["mirror", "unit"], name="package_mirror_unit"),
                ),
                migrations.AddConstraint(
                    model_name="package",
                    constraint=models.UniqueConstraint(
                        fields=("channel", "unit", "filename"),
                        name="package_file_unique_in_channel",
                    ),
                ),
            ]
        ),
        migrations.AlterField(
            model_name="package",
            name="unit",
            field=models.CharField(
                blank=True,
                help_text="The index unit: a conda platform, a Python project or a CRAN folder.",
                max_length=100,
            ),
        ),
        migrations.AlterModelOptions(
            name="package",
            options={"ordering": ["channel", "unit", "name", "version", "filename"]},
        ),
        migrations.RenameField(
            model_name="package", old_name="record_hash", new_name="entry_digest"
        ),
        migrations.RenameField(
            model_name="package", old_name="excluded", new_name="excluded_reason"
        ),
    ]

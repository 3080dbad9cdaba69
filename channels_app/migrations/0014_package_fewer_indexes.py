"""Fewer indexes on the package table, which every synced file's row has to maintain: a first
conda sync inserts 600,000 rows, and with eleven indexes that cost about twice the COPY itself.

- `channel_id` and `mirror_id` lose their single-column indexes: `package_file_unique_in_channel`
  and `package_channel_name` lead with the channel, `package_mirror_unit` with the mirror.
- `artifact_id`, `sidecar_id` and the decision (`excluded_reason`, or a dry run's
  `would_exclude_reason`) are indexed only where set (partial indexes): what looks them up
  asks for a stored file or a marked row, and a passive mirror's allowed rows no longer enter
  three indexes (nor the `varchar_pattern_ops` copy of `excluded_reason`, which nothing
  searched by prefix). Finding a mirror's marked rows (none, mostly) is an index probe, not a
  scan of its 600,000 rows.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0013_package_served_name"),
        ("mirrors_app", "0009_run_progress_totals"),
    ]

    operations = [
        migrations.AlterField(
            model_name="package",
            name="artifact",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="packages",
                to="channels_app.artifact",
            ),
        ),
        migrations.AlterField(
            model_name="package",
            name="channel",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="packages",
                to="channels_app.channel",
            ),
        ),
        migrations.AlterField(
            model_name="package",
            name="excluded_reason",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AlterField(
            model_name="package",
            name="mirror",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                help_text="The mirror that brought this package; kept when the mirror is deleted.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="packages",
                to="mirrors_app.mirror",
            ),
        ),
        migrations.AlterField(
            model_name="package",
            name="sidecar",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="sidecar_of",
                to="channels_app.artifact",
            ),
        ),
        migrations.AddIndex(
            model_name="package",
            index=models.Index(
                condition=models.Q(("artifact__isnull", False)),
                fields=["artifact"],
                name="package_artifact",
            ),
        ),
        migrations.AddIndex(
            model_name="package",
            index=models.Index(
                condition=models.Q(("sidecar__isnull", False)),
                fields=["sidecar"],
                name="package_sidecar",
            ),
        ),
        migrations.AddIndex(
            model_name="package",
            index=models.Index(
                condition=models.Q(
                    models.Q(("excluded_reason", ""), _negated=True),
                    models.Q(("would_exclude_reason", ""), _negated=True),
                    _connector="OR",
                ),
                fields=["excluded_reason"],
                name="package_marked",
            ),
        ),
    ]

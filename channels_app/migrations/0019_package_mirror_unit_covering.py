"""A mirror's unit's rows index carries their digests and removal: the check of a kept
document's stamp (a count and a sum of the unit's live rows, every re-sync) reads the index
alone, not the 600,000 records of a conda-forge-sized subdir."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0018_channel_render_marks"),
        ("mirrors_app", "0009_run_progress_totals"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="package", name="package_mirror_unit"),
        migrations.AddIndex(
            model_name="package",
            index=models.Index(
                fields=["mirror", "unit"],
                include=("entry_digest", "removed"),
                name="package_mirror_unit",
            ),
        ),
    ]

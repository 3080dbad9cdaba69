"""The rows a publish deletes (`removed`) are found by a partial index: before, the delete
read every row of the channel to find them. Rows not removed (nearly all) cost it nothing."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0016_package_reference_checks"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="package",
            index=models.Index(
                condition=models.Q(("removed", True)), fields=["channel"], name="package_removed"
            ),
        ),
    ]

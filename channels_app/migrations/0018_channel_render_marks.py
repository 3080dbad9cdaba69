"""A channel remembers what each unit's published index was rendered from (the database
snapshot and the file's digest), so a publish can splice the rows changed since into it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0017_package_removed_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="channel",
            name="render_marks",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
    ]

"""The published files' `channel_id` loses its single-column index: `published_file_unique`
(channel, path) leads with it, and every published file's row had to maintain both (a
PyPI-sized publish inserts 400,000)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0014_package_fewer_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="publishedfile",
            name="channel",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="published_files",
                to="channels_app.channel",
            ),
        ),
    ]

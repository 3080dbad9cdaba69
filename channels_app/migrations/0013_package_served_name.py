"""The names of a channel's served packages, for the package browser: a partial index whose
condition is `SERVED` (what a published index lists), so listing, searching and counting the
names of a 600,000-file channel are index-only scans of its served rows."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0012_serving_notify"),
        ("mirrors_app", "0008_policy_enforcement"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="package",
            index=models.Index(
                condition=models.Q(
                    ("excluded_reason", ""),
                    ("removed", False),
                    models.Q(("artifact__isnull", False), ("on_demand", True), _connector="OR"),
                ),
                fields=["channel", "name"],
                name="package_served_name",
            ),
        ),
    ]

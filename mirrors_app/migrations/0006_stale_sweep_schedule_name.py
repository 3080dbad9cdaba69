"""The stale-run sweep's beat entry was renamed when its interval started to follow
PSM_RUN_STALE_AFTER: drop the entry stored under the old name, or both would run."""

from django.db import migrations

OLD_NAME = "every-5-minutes-fail-stale-runs"


def drop_old_entry(apps, schema_editor) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=OLD_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("mirrors_app", "0005_run_warnings_rejections"),
        ("django_celery_beat", "0018_improve_crontab_helptext"),
    ]

    operations = [migrations.RunPython(drop_old_entry, migrations.RunPython.noop)]

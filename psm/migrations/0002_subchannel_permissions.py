"""Subchannels and their mirrors got permissions of their own (channels_app 0007, mirrors_app
0004). Until now the channel and mirror permissions covered them, so whoever holds one of those
directly or through a group of their own also gets its subchannel twin: nobody loses access on
upgrade. PSM's category groups are set by psm.roles after migrate, not here."""

from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations

TWINS = {
    ("channels_app", "view_channel"): "view_subchannel",
    ("channels_app", "add_channel"): "add_subchannel",
    ("channels_app", "change_channel"): "change_subchannel",
    ("channels_app", "delete_channel"): "delete_subchannel",
    ("channels_app", "freeze_channel"): "freeze_subchannel",
    ("mirrors_app", "view_mirror"): "view_subchannel_mirror",
    ("mirrors_app", "add_mirror"): "add_subchannel_mirror",
    ("mirrors_app", "change_mirror"): "change_subchannel_mirror",
    ("mirrors_app", "delete_mirror"): "delete_subchannel_mirror",
    ("mirrors_app", "run_mirror"): "run_subchannel_mirror",
    ("mirrors_app", "stop_mirror"): "stop_subchannel_mirror",
    ("mirrors_app", "restart_mirror"): "restart_subchannel_mirror",
    ("mirrors_app", "download_dependency_report"): "download_subchannel_dependency_report",
}
LEVELS = ("Read", "Write", "Manage")
MANAGED_PREFIXES = ("Channels", "Subchannels", "Channel mirrors", "Subchannel mirrors")


def copy_to_twins(apps, schema_editor) -> None:
    # Permissions are normally created after migrate; the twins are needed now.
    for label in ("channels_app", "mirrors_app"):
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    GroupPermission = Group.permissions.through
    UserPermission = User.user_permissions.through
    managed = {f"{prefix}: {level}" for prefix in MANAGED_PREFIXES for level in LEVELS}
    for (app_label, codename), twin_codename in TWINS.items():
        perm = Permission.objects.filter(
            content_type__app_label=app_label, codename=codename
        ).first()
        twin = Permission.objects.filter(
            content_type__app_label=app_label, codename=twin_codename
        ).first()
        if perm is None or twin is None:
            continue  # a fresh database: nobody holds anything yet
        groups = Group.objects.filter(permissions=perm).exclude(name__in=managed)
        GroupPermission.objects.bulk_create(
            [
                GroupPermission(group_id=pk, permission_id=twin.pk)
                for pk in groups.values_list("pk", flat=True)
            ],
            ignore_conflicts=True,
        )
        users = User.objects.filter(user_permissions=perm).values_list("pk", flat=True)
        UserPermission.objects.bulk_create(
            [UserPermission(user_id=pk, permission_id=twin.pk) for pk in users],
            ignore_conflicts=True,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("psm", "0001_initial"),
        ("channels_app", "0007_subchannel_permissions"),
        ("mirrors_app", "0004_subchannel_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(copy_to_twins, migrations.RunPython.noop)]

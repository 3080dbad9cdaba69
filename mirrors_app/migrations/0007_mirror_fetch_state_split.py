"""`Mirror.fetch_state` held two things under keys: the policy fingerprint ("_policy") and
the listing documents' validators ("_documents"). Each gets its own field; the values move."""

from django.db import migrations, models


def split(apps, schema_editor) -> None:
    Mirror = apps.get_model("mirrors_app", "Mirror")
    for mirror in Mirror.objects.exclude(fetch_state={}).only("pk", "fetch_state"):
        state = mirror.fetch_state or {}
        Mirror.objects.filter(pk=mirror.pk).update(
            policy_fingerprint=state.get("_policy") or "",
            listing_validators=state.get("_documents") or {},
        )


def join(apps, schema_editor) -> None:
    Mirror = apps.get_model("mirrors_app", "Mirror")
    rows = Mirror.objects.exclude(policy_fingerprint="", listing_validators={})
    for mirror in rows.only("pk", "policy_fingerprint", "listing_validators"):
        state = {}
        if mirror.policy_fingerprint:
            state["_policy"] = mirror.policy_fingerprint
        if mirror.listing_validators:
            state["_documents"] = mirror.listing_validators
        Mirror.objects.filter(pk=mirror.pk).update(fetch_state=state)


class Migration(migrations.Migration):
    dependencies = [
        ("mirrors_app", "0006_stale_sweep_schedule_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="mirror",
            name="policy_fingerprint",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.AddField(
            model_name="mirror",
            name="listing_validators",
            field=models.JSONField(blank=True, default=dict, editable=False),
        ),
        migrations.RunPython(split, join),
        migrations.RemoveField(model_name="mirror", name="fetch_state"),
    ]

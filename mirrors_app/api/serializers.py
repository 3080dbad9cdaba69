from __future__ import annotations

from rest_framework import serializers

from channels_app.api.serializers import ChannelPathField
from channels_app.formats import kind_choices
from psm.api import FullCleanMixin

from ..models import Mirror, SyncRun


class SyncRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = SyncRun
        fields = [
            "id",
            "mirror",
            "state",
            "trigger",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "step",
            "progress",
            "total",
            "seen",
            "filtered",
            "filtered_reasons",
            "ingested",
            "downloaded",
            "passive",
            "failed",
            "bytes_downloaded",
            "error",
        ]
        read_only_fields = fields


class MirrorSerializer(FullCleanMixin, serializers.ModelSerializer):
    channel = ChannelPathField(help_text="The channel, as 'channel' or 'channel/subchannel'.")
    kind = serializers.ChoiceField(choices=kind_choices(), help_text=Mirror.kind.field.help_text)
    run_now = serializers.BooleanField(
        write_only=True,
        default=False,
        help_text="Start the mirror at once (Save & Run) instead of waiting for its schedule.",
    )
    active_run = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()

    class Meta:
        model = Mirror
        fields = [
            "id",
            "channel",
            "name",
            "mode",
            "source_url",
            "kind",
            "cron",
            "policy",
            "options",
            "run_now",
            "status",
            "active_run",
            "last_synced_at",
            "warnings",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "last_synced_at", "created_at", "updated_at"]
        validators = []  # the model's constraints run in full_clean()

    def clean_skip_fields(self) -> set[str]:
        return {"run_now"}

    def get_active_run(self, mirror: Mirror) -> dict | None:
        run = mirror.active_run()
        return SyncRunSerializer(run).data if run else None

    def get_warnings(self, mirror: Mirror) -> list[str]:
        return mirror.warnings()


class MirrorDetailsSerializer(serializers.Serializer):
    """What "See details" shows: filtering by reason and active vs passive counts."""

    mirror = MirrorSerializer()
    effective_policy = serializers.CharField(allow_null=True)
    policy_source = serializers.CharField()
    packages_active = serializers.IntegerField()
    packages_passive = serializers.IntegerField()
    packages_failed = serializers.IntegerField(
        help_text="Active packages not stored: their download failed (not published)."
    )
    failures = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="The first 100 packages whose download failed, with the reason.",
    )
    latest_run = SyncRunSerializer(allow_null=True)
    dependency_report = serializers.CharField(
        help_text="Why no dependency report exists, or 'available'."
    )

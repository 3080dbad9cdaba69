from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from channels_app.api.serializers import ChannelPathField
from channels_app.formats import kind_choices
from psm.api import FullCleanMixin
from psm.redaction import redact, scrub

from ..models import HELP, Mirror, PolicyEnforcement, SyncRun

SECRETS_HELP = (
    " Secrets in the URL (user:password@, /t/<token>/ segments, query values) are write-only: "
    "they are returned as ***. Send the URL back with *** to keep them, or with new ones; "
    "a *** is kept only for the same scheme, host and port."
)


class SourceURLField(serializers.URLField):
    """A URL whose secrets are written, never read back: returned as `***`."""

    def to_representation(self, value) -> str:
        return redact(str(value))


class ScrubbedTextField(serializers.CharField):
    """Text that may quote URLs (errors): their secrets as `***`."""

    def to_representation(self, value) -> str:
        return scrub(str(value))


class SyncRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.IntegerField(read_only=True, allow_null=True)
    # Errors are scrubbed when recorded; again here for runs recorded before that.
    error = ScrubbedTextField(read_only=True, help_text=SyncRun.error.field.help_text)
    warnings = serializers.SerializerMethodField(
        help_text="What the run could not do or did not find, one item each: an index that is "
        "missing or unreadable, a name of the mirror's options the source does not have."
    )

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
            "units_total",
            "units_done",
            "files_to_download",
            "bytes_to_download",
            "downloads_started_at",
            "error",
            "warnings",
        ]
        read_only_fields = fields

    def get_warnings(self, run: SyncRun) -> list[str]:
        return scrub(run.warnings).splitlines()


class RunProgressSerializer(SyncRunSerializer):
    """The counts of a run that live progress shows, as `SyncRunSerializer` (the details API's
    `latest_run`) gives them; without the long lists (reasons, warnings) polled every 2 s."""

    class Meta(SyncRunSerializer.Meta):
        fields = [
            name
            for name in SyncRunSerializer.Meta.fields
            if name not in ("mirror", "requested_by", "filtered_reasons", "warnings")
        ]
        read_only_fields = fields


class AppliedPolicySerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    source = serializers.ChoiceField(choices=["mirror", "channel", "none"])


class MirrorSerializer(FullCleanMixin, serializers.ModelSerializer):
    channel = ChannelPathField(help_text="The channel, as 'channel' or 'channel/subchannel'.")
    source_url = SourceURLField(max_length=2000, help_text=HELP["source_url"] + SECRETS_HELP)
    kind = serializers.ChoiceField(choices=kind_choices(), help_text=Mirror.kind.field.help_text)
    run_now = serializers.BooleanField(
        write_only=True,
        default=False,
        help_text="Start the mirror at once (Save & Run) instead of waiting for its schedule.",
    )
    active_run = serializers.SerializerMethodField()
    applied_policy = serializers.SerializerMethodField(
        help_text="The policy in force: the mirror's own, else its channel's (source 'none' "
        "when neither has one)."
    )
    warnings = serializers.SerializerMethodField(
        help_text="Advice about this configuration, never blocking: several mirrors in one "
        "channel, a frequent schedule, a full PyPI mirror; after a save that set the source "
        "URL, what makes the source not look like a repository of the mirror's type (or why "
        "it could not be checked)."
    )

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
            "applied_policy",
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

    @extend_schema_field(AppliedPolicySerializer)
    def get_applied_policy(self, mirror: Mirror) -> dict:
        policy = mirror.effective_policy() if mirror.channel_id else None
        if policy is None:
            return {"id": None, "name": None, "source": "none"}
        source = "mirror" if mirror.policy_id else "channel"
        return {"id": policy.pk, "name": policy.name, "source": source}

    def get_warnings(self, mirror: Mirror) -> list[str]:
        return mirror.warnings()


class PackageCountsSerializer(serializers.Serializer):
    """The mirror's files now, by state: each count is the length of
    `GET /api/mirrors/{id}/files/?state=<state>`, and they add up to `offered`."""

    offered = serializers.IntegerField(
        help_text="Every file the source offered in the parts of it the mirror reads."
    )
    stored = serializers.IntegerField(help_text="Downloaded by a run and served from here.")
    cached = serializers.IntegerField(help_text="Passive files fetched on a first request.")
    waiting = serializers.IntegerField(help_text="Passive files no client asked for yet.")
    not_downloaded = serializers.IntegerField(
        help_text="Active files a run has not downloaded yet (stopped, or still going)."
    )
    failed = serializers.IntegerField(
        help_text="Files whose download or first-request fetch failed (not served)."
    )
    excluded = serializers.IntegerField(
        help_text="Files kept out by a filter or the policy, or as unsafe or invalid entries."
    )


class FailureSerializer(serializers.Serializer):
    path = serializers.CharField()
    error = serializers.CharField()
    at = serializers.DateTimeField(help_text="When it failed.")


class EnforcementChangeSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="unit/filename")
    change = serializers.ChoiceField(choices=["left", "entered", "would leave"])
    reason = serializers.CharField(help_text="Why it left or would leave; empty when it entered.")


class PolicyEnforcementSerializer(serializers.ModelSerializer):
    """One re-decision of the mirror's packages, outside a run, that changed something."""

    changes = EnforcementChangeSerializer(
        many=True,
        help_text="Which files left, entered or (dry run) would leave, and why; the first "
        "1000, those that leave first.",
    )

    class Meta:
        model = PolicyEnforcement
        fields = [
            "id",
            "mirror",
            "at",
            "trigger",
            "policy_name",
            "dry_run",
            "entered",
            "left",
            "would_leave",
            "published",
            "changes",
        ]
        read_only_fields = fields


class MirrorDetailsSerializer(serializers.Serializer):
    """What "See details" shows: the mirror's files now (`packages`, `excluded_by_reason`,
    `failures`), apart from what its latest run did (`latest_run`)."""

    mirror = MirrorSerializer()
    effective_policy = serializers.CharField(allow_null=True)
    policy_source = serializers.CharField()
    packages = PackageCountsSerializer()
    excluded_by_reason = serializers.DictField(
        child=serializers.IntegerField(), help_text="Sums to `packages.excluded`."
    )
    packages_active = serializers.IntegerField(help_text="Same as `packages.stored`.")
    packages_passive = serializers.IntegerField(help_text="`packages.cached` + `packages.waiting`.")
    packages_failed = serializers.IntegerField(help_text="Same as `packages.failed`.")
    failures = FailureSerializer(
        many=True,
        help_text="The first 100 failed files with the reason; all of them: `files/?state=failed`.",
    )
    would_block = serializers.IntegerField(
        help_text="Files the dry-run policy would block but lets in (they are also counted in "
        "`packages`); the list: `files/?state=would_block`."
    )
    latest_run = SyncRunSerializer(allow_null=True)
    enforcements = PolicyEnforcementSerializer(
        many=True,
        help_text="The latest 10 policy enforcements, newest first; all: `enforcements/`.",
    )
    dependency_report = serializers.CharField(
        help_text="Why no dependency report exists, or 'available'."
    )


class MirrorFileSerializer(serializers.Serializer):
    """One file of a mirror in a given state."""

    path = serializers.CharField(help_text="unit/filename")
    name = serializers.CharField()
    version = serializers.CharField()
    reason = serializers.CharField(
        help_text="Why it is excluded, failed, or (would_block) would be blocked; else empty."
    )
    at = serializers.DateTimeField(help_text="Last change of the file's record or state.")


class ExcludedPackageSerializer(serializers.Serializer):
    """A package of the mirror that its policy keeps out."""

    path = serializers.CharField(help_text="subdir/filename")
    name = serializers.CharField()
    version = serializers.CharField()
    reason = serializers.CharField()


class ExplanationSerializer(serializers.Serializer):
    """Why one file of the mirror is in the channel or not."""

    path = serializers.CharField(help_text="subdir/filename")
    version = serializers.CharField()
    allowed = serializers.BooleanField()
    reason = serializers.CharField()
    stored = serializers.BooleanField(help_text="Whether the file is downloaded (active).")


class DependencyReportRowSerializer(serializers.Serializer):
    requested = serializers.CharField(help_text="The allow rule (MatchSpec) this row comes from.")
    package = serializers.CharField()
    version = serializers.CharField()
    build = serializers.CharField()
    subdir = serializers.CharField()
    depth = serializers.IntegerField(help_text="0 requested, 1 direct, 2+ indirect dependency.")
    required_by = serializers.CharField()
    status = serializers.CharField(help_text="present, 'filtered: <reason>' or missing.")


class LeavingPackageSerializer(serializers.Serializer):
    path = serializers.CharField()
    reason = serializers.CharField()


class PolicyChangeSerializer(serializers.Serializer):
    """What applying the mirror's policy to the packages it holds does (preview) or did."""

    allowed = serializers.IntegerField(help_text="Packages the policy keeps.")
    excluded = serializers.IntegerField(help_text="Packages the policy keeps out.")
    entering = serializers.IntegerField(help_text="Packages coming in (were excluded).")
    leaving = serializers.IntegerField(help_text="Packages going out (were in).")
    entering_packages = serializers.ListField(
        child=serializers.CharField(), help_text="The first 1000 entering, as subdir/filename."
    )
    leaving_packages = LeavingPackageSerializer(
        many=True, help_text="The first 1000 leaving, with the reason."
    )
    excluded_by_reason = serializers.DictField(
        child=serializers.IntegerField(), help_text="Excluded packages counted by reason."
    )

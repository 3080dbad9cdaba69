"""Mirrors (what to copy into a channel, how and when) and their runs."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.text import capfirst

from channels_app.formats import FORMATS, OptionsError, get_format, kind_labels
from channels_app.models import validate_kind
from psm.http import upstream_url_problem
from psm.redaction import is_masked, redact, restore_secrets, scrub

from . import schedules
from .querysets import MirrorQuerySet, SyncRunQuerySet

HELP = {
    "name": "A descriptive name for your end users; unique within the channel.",
    "mode": (
        "Active downloads every package that passes the filters now. Passive stores only the "
        "metadata; a package is downloaded from the source the first time a client asks for it. "
        "The packages offered are the same either way. Cannot be changed after creation."
    ),
    "source_url": (
        "The URL of the repository to mirror. Another PSM channel: https://<host>/api/repo/"
        "<channel>. An Anaconda Business channel: https://repo.anaconda.cloud/repo/t/<token>/"
        "<org_id>/<channel>. The host must be on the upstream allowlist."
    ),
    "kind": (
        f"The type of packages mirrored from the source: {kind_labels()}. It must match the "
        "channel's package type."
    ),
    "cron": (
        "When the mirror runs, as a cron expression (minute hour day-of-month month "
        "day-of-week, UTC) or @daily, @weekly, @monthly, @yearly. Default: midnight on the 1st "
        "of every month. Mirroring large channels can take hours: do not run more often than "
        "daily. A full PyPI mirror should run once yearly."
    ),
    "policy": (
        "Leave empty to use the channel's policy, or select a policy for this mirror only. A "
        "policy already applied to the channel cannot also be applied to the mirror."
    ),
    "options": 'Type-specific options as JSON, e.g. {"subdirs": ["linux-64"]} for conda.',
}


class Mirror(models.Model):
    """A copy of an external repository inside one channel or subchannel."""

    class Mode(models.TextChoices):
        ACTIVE = "active", "Active"
        PASSIVE = "passive", "Passive"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    channel = models.ForeignKey(
        "channels_app.Channel", on_delete=models.CASCADE, related_name="mirrors"
    )
    name = models.CharField("mirror name", max_length=100, help_text=HELP["name"])
    mode = models.CharField(
        "mirroring mode",
        max_length=10,
        choices=Mode.choices,
        default=Mode.PASSIVE,
        help_text=HELP["mode"],
    )
    source_url = models.URLField(
        "external source URL", max_length=2000, help_text=HELP["source_url"]
    )
    # No `choices=`: valid kinds come from the formats registry.
    kind = models.CharField(
        "mirror type", max_length=20, validators=[validate_kind], help_text=HELP["kind"]
    )
    cron = models.CharField(
        "mirroring frequency",
        max_length=100,
        default=schedules.DEFAULT_CRON,
        help_text=HELP["cron"],
    )
    policy = models.ForeignKey(
        "policies_app.Policy",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="mirrors",
        verbose_name="mirror policy",
        help_text=HELP["policy"],
    )
    options = models.JSONField(default=dict, blank=True, help_text=HELP["options"])
    # What the packages were last decided under (`sync.policy.policy_fingerprint`):
    # a run decides them again when it changes, though no record did.
    policy_fingerprint = models.TextField(blank=True, default="", editable=False)
    # The validators of the source's listing documents (`RepositoryFormat.list_units`)
    # kept by the last run that read every unit, with the options and number of
    # units they stand for: {"key": ..., "documents": {...}} (`sync.fetch_state`).
    listing_validators = models.JSONField(default=dict, blank=True, editable=False)
    status = models.CharField(
        "mirroring status", max_length=10, choices=Status.choices, default=Status.SCHEDULED
    )
    last_synced_at = models.DateTimeField(
        "last updated", null=True, blank=True, help_text="When a run last finished."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MirrorQuerySet.as_manager()
    #: What checking the source found wrong (`services.mirror_check_source`), told with the
    #: warnings after the save that checked it; not stored.
    source_problems: list[str] = []

    class Meta:
        ordering = ["channel__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "name"],
                name="mirror_name_unique_in_channel",
                violation_error_message="This channel already has a mirror with this name.",
            )
        ]
        permissions = [
            ("run_mirror", "Can run mirrors now"),
            ("stop_mirror", "Can stop running mirrors"),
            ("restart_mirror", "Can restart mirrors"),
            ("view_all_mirrors", "Can see the All Mirrors list"),
            ("download_dependency_report", "Can download mirror dependency reports"),
            # Mirrors of subchannels, governed by the Subchannel mirrors category: the
            # permissions above (and Django's own) apply to mirrors of top-level channels only.
            ("view_subchannel_mirror", "Can view subchannel mirrors"),
            ("add_subchannel_mirror", "Can add subchannel mirrors"),
            ("change_subchannel_mirror", "Can change subchannel mirrors"),
            ("delete_subchannel_mirror", "Can delete subchannel mirrors"),
            ("run_subchannel_mirror", "Can run subchannel mirrors now"),
            ("stop_subchannel_mirror", "Can stop running subchannel mirrors"),
            ("restart_subchannel_mirror", "Can restart subchannel mirrors"),
            (
                "download_subchannel_dependency_report",
                "Can download subchannel mirror dependency reports",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        # Remember the stored mode: it may not change once the mirror exists.
        instance._stored_mode = instance.__dict__.get("mode")
        instance._stored_source_url = instance.__dict__.get("source_url")
        return instance

    @property
    def source_changed(self) -> bool:
        """Whether the source URL is new: a new mirror's, or not the one loaded."""
        return self.source_url != getattr(self, "_stored_source_url", None)

    @property
    def format(self):
        return get_format(self.kind)

    # --- The source URL's secrets are write-only (psm.redaction) ----------------------------

    @property
    def source_url_redacted(self) -> str:
        """The source URL as it may be shown: its secrets as `***`."""
        return redact(self.source_url)

    def source_url_with_secrets(self, submitted: str) -> str:
        """`submitted` with the `***` of a redacted source URL replaced by the stored secrets
        (so an edit that keeps them needs no retyping); a new URL is returned as it is."""
        if not is_masked(submitted):
            return submitted
        stored = self.pk and Mirror.objects.filter(pk=self.pk).values_list("source_url").first()
        try:
            return restore_secrets(submitted, stored[0] if stored else "")
        except ValueError as exc:
            raise ValidationError({"source_url": str(exc)}) from None

    def full_clean(self, exclude=None, validate_unique=True, validate_constraints=True) -> None:
        # Every writer (admin form, API, services) validates here: take the secrets back first,
        # and keep them out of the messages (an error quoting the URL must not reveal them).
        if not exclude or "source_url" not in exclude:
            self.source_url = self.source_url_with_secrets(self.source_url)
        try:
            super().full_clean(exclude, validate_unique, validate_constraints)
        except ValidationError as exc:
            raise ValidationError(
                {
                    field: [scrub(message, self.source_url) for message in messages]
                    for field, messages in exc.message_dict.items()
                }
            ) from None

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.STOPPING)

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def status_label(self) -> str:
        """The status as shown: "Completed with warnings" when the latest run has some (read
        from `MirrorQuerySet.with_run_warnings`; without it, the plain status)."""
        label = self.get_status_display()
        if self.status == self.Status.COMPLETED and getattr(self, "run_warned", False):
            return f"{label} with warnings"
        return label

    def effective_policy(self):
        """The mirror's own policy, else its channel's (a mirror policy replaces the channel's)."""
        return self.policy or self.channel.policy

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        stored_mode = getattr(self, "_stored_mode", None)
        if self.pk and stored_mode and self.mode != stored_mode:
            errors.setdefault("mode", []).append(
                "The mirroring mode cannot be changed after the mirror is created."
            )
        if self.cron:
            try:
                self.cron = schedules.normalize_cron(self.cron)
            except ValidationError as exc:
                errors.setdefault("cron", []).extend(exc.messages)
        if self.source_url:
            self.source_url = self.source_url.strip()
            # The same check as every fetch (the address check waits for the fetch: it needs DNS).
            problem = upstream_url_problem(self.source_url)
            if problem:
                errors.setdefault("source_url", []).append(f"{capfirst(problem)}.")
        if self.kind in FORMATS:
            try:
                self.options = self.format.clean_options(self.options)
            except OptionsError as exc:
                errors.setdefault("options", []).append(str(exc))
        if self.channel_id:
            channel = self.channel
            if self.kind in FORMATS and self.kind != channel.kind:
                errors.setdefault("kind", []).append(
                    f"The mirror type {FORMATS[self.kind].label!r} does not match the package "
                    f"type of channel {channel.path!r} ({FORMATS[channel.kind].label!r})."
                )
            if self.policy_id:
                from policies_app.models import policy_type_problem

                problem = policy_type_problem(self.policy, channel.kind)
                if problem:
                    errors.setdefault("policy", []).append(problem)
            if self.policy_id and self.policy_id == channel.policy_id:
                errors.setdefault("policy", []).append(
                    f"Policy {self.policy.name!r} is already applied to channel {channel.path!r}; "
                    "leave the mirror policy empty to use the channel's policy."
                )
        if errors:
            raise ValidationError(errors)

    def warnings(self) -> list[str]:
        """Advice about this configuration, shown after saving; never blocks the save."""
        advice: list[str] = []
        if self.channel_id and self.channel.mirrors.exclude(pk=self.pk).exists():
            advice.append(
                f"Channel {self.channel.path!r} has more than one mirror: it is recommended "
                "that a channel holds only one mirror, to avoid conflicts between sources."
            )
        try:
            if schedules.runs_more_than_daily(self.cron):
                advice.append(
                    "This schedule runs more often than daily; large mirrors can take hours "
                    "and runs may collide (a tick that finds a run active is skipped)."
                )
        except (ValueError, ValidationError):
            pass
        if self.kind in FORMATS:
            advice.extend(self.format.source_warnings(self.source_url, self.options))
        return advice + self.source_problems

    def next_run_at(self):
        return schedules.next_run(self.cron)

    def active_run(self) -> SyncRun | None:
        prefetched = getattr(self, "_active_runs", None)  # see MirrorQuerySet.with_active_runs
        if prefetched is not None:
            return prefetched[0] if prefetched else None
        return self.runs.active().first()

    def latest_run(self) -> SyncRun | None:
        return self.runs.exclude(state=SyncRun.State.SKIPPED).order_by("-created_at").first()


class SyncRun(models.Model):
    """One run of a mirror: its state, who or what started it, and its counters."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped"
        SKIPPED = "skipped", "Skipped"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING, State.STOPPING)

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Run now"
        SCHEDULE = "schedule", "Schedule"
        RESTART = "restart", "Restart"

    mirror = models.ForeignKey(Mirror, on_delete=models.CASCADE, related_name="runs")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    step = models.CharField(max_length=200, blank=True, help_text="What the run is doing now.")
    # Counters update as the run goes, so the admin can show progress.
    total = models.BigIntegerField(null=True, blank=True, help_text="Records expected, if known.")
    seen = models.BigIntegerField(default=0, help_text="Records read from the source.")
    filtered = models.BigIntegerField(default=0, help_text="Records excluded by filters.")
    filtered_reasons = models.JSONField(default=dict, blank=True)
    ingested = models.BigIntegerField(default=0, help_text="Records added or updated.")
    downloaded = models.BigIntegerField(default=0, help_text="Files downloaded (active).")
    passive = models.BigIntegerField(default=0, help_text="Files left for first request.")
    failed = models.BigIntegerField(default=0, help_text="Files that could not be mirrored.")
    bytes_downloaded = models.BigIntegerField(default=0)
    # What the run reads and downloads, known once each phase starts, so progress shows
    # done / total for both (set in batches by `sync.progress.Progress`, never per record).
    units_total = models.IntegerField(
        null=True, blank=True, help_text="Index units (conda subdirs, projects) to read."
    )
    units_done = models.IntegerField(default=0, help_text="Index units read so far.")
    files_to_download = models.BigIntegerField(
        null=True, blank=True, help_text="Files to download when downloads started (active)."
    )
    bytes_to_download = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Their bytes, when the index gives every file's size.",
    )
    downloads_started_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why the run failed.")
    warnings = models.TextField(
        blank=True,
        help_text="What a completed run could not do or did not find (one per line): an index "
        "that is missing or unreadable, a listed project upstream does not have.",
    )

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One active run per mirror, enforced by the database rather than by luck.
            models.UniqueConstraint(
                fields=["mirror"],
                condition=Q(state__in=["queued", "running", "stopping"]),
                name="one_active_run_per_mirror",
                violation_error_message="This mirror already has a run in progress.",
            )
        ]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="syncrun_state_heartbeat")]

    def __str__(self) -> str:
        return f"{self.mirror} run #{self.pk} ({self.get_state_display()})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def progress(self) -> int | None:
        """Percent of expected records read, when the total is known."""
        if not self.total:
            return None
        return min(100, int(self.seen * 100 / self.total))


class MirrorUnit(models.Model):
    """What a mirror last read in full of one unit of its source (a conda subdir, a Python
    project): the validators sent back as a conditional request (an unchanged unit costs one
    304) and the upstream serial (an unchanged PyPI project costs nothing)."""

    mirror = models.ForeignKey(Mirror, on_delete=models.CASCADE, related_name="units")
    name = models.CharField(max_length=255)
    validators = models.JSONField(default=dict, blank=True)
    serial = models.BigIntegerField(null=True, blank=True)
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mirror", "name"], name="mirror_unit_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.mirror} {self.name}"


class MirrorRejection(models.Model):
    """An index entry of the source that the mirror could not take in: unsafe or invalid
    (a `../` file name, no digest to verify with), or a file another mirror of the channel
    provides. Not a package (never published); kept so that what the details page counts can
    be listed. Replaced unit by unit whenever the unit is read again."""

    mirror = models.ForeignKey(Mirror, on_delete=models.CASCADE, related_name="rejections")
    unit = models.CharField(max_length=255)
    filename = models.CharField(max_length=255)
    reason = models.CharField(max_length=300)
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["unit", "filename"]
        indexes = [models.Index(fields=["mirror", "unit"], name="rejection_mirror_unit")]

    def __str__(self) -> str:
        return f"{self.mirror} {self.unit}/{self.filename}: {self.reason}"


class PolicyEnforcement(models.Model):
    """One re-decision of a mirror's packages that changed something, outside a run: after an
    advisory load, a policy or waiver change, a waiver's expiry or the daily cooldown check.
    Which packages left or entered (or, under a dry-run policy, would leave), and why."""

    mirror = models.ForeignKey(Mirror, on_delete=models.CASCADE, related_name="enforcements")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    trigger = models.CharField(max_length=200, help_text="What made PSM decide again.")
    policy_name = models.CharField(max_length=100, blank=True)
    dry_run = models.BooleanField(default=False)
    entered = models.PositiveIntegerField(default=0)
    left = models.PositiveIntegerField(default=0)
    would_leave = models.PositiveIntegerField(default=0)
    # [{"path": ..., "change": "left" | "entered" | "would leave", "reason": ...}], at most
    # `enforcement.CHANGES_KEPT`.
    changes = models.JSONField(default=list, blank=True)
    published = models.BooleanField(
        default=False, help_text="Whether the channel's index was published again."
    )

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.mirror} @ {self.at:%Y-%m-%d %H:%M}: -{self.left} +{self.entered}"

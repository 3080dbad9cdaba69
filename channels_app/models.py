"""Channels, the packages they index, and the content-addressed files behind them."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .formats import FORMATS, kind_labels
from .querysets import ChannelQuerySet, has_rows

channel_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*\Z",
    "Use lower-case letters, digits, '-' and '_', starting with a letter or digit.",
)


def validate_kind(value: str) -> None:
    if value not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise ValidationError(f"Unknown package type {value!r}; choose one of: {known}.")


class Channel(models.Model):
    """A named repository that clients install from; one level of subchannels below it."""

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public (anyone)"
        AUTHENTICATED = "authenticated", "Authenticated (any signed-in user or token)"
        PRIVATE = "private", "Private (granted groups, Manage on channels, tokens granting it)"

    # Top-level names that would clash with client URLs (`/api/repo/t/<token>/<channel>/`).
    RESERVED_NAMES = frozenset({"t"})

    name = models.CharField(max_length=100, validators=[channel_name_validator])
    description = models.TextField(blank=True)
    # No `choices=`: valid kinds come from the formats registry, so a new type needs no migration.
    kind = models.CharField(
        "package type",
        max_length=20,
        validators=[validate_kind],
        help_text=f"The type of packages this channel holds: {kind_labels()}.",
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="subchannels",
        help_text="Set to make this a subchannel (one level deep) of another channel.",
    )
    policy = models.ForeignKey(
        "policies_app.Policy",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="channels",
        help_text="Policy applied to everything mirrored into this channel.",
    )
    visibility = models.CharField(
        "privacy",
        max_length=20,
        choices=Visibility.choices,
        default=Visibility.PUBLIC,
        help_text="Who package clients may read it as. Anyone without access gets 404, as for "
        "a channel that does not exist. A subchannel has its own privacy.",
    )
    frozen = models.BooleanField(
        default=False,
        help_text="A frozen channel keeps serving its last published index until unfrozen.",
    )
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    frozen_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every write to the channel's packages; publishing records the version it
    # rendered, so "is the published index behind?" is one comparison.
    content_version = models.BigIntegerField(default=0, editable=False)
    published_version = models.BigIntegerField(default=0, editable=False)
    published_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Index-level metadata kept besides the packages, per mirror and unit, e.g. conda's
    # `removed` list: {"<mirror id>": {"linux-64": {"removed": [...]}}}.
    index_extras = models.JSONField(default=dict, blank=True, editable=False)
    # What each published index file was rendered from, so the next publish can splice in
    # only the rows changed since: {"linux-64/repodata.json": {"sha256": <the file's>, "xmin":
    # <oldest transaction running when its rows were read>, "server": ..., "sections": [[start,
    # end], ...]}} (see `publishing.PackageIndexSource.previous`).
    # (Nullable, no default: SQLite adds such a column in place, where a default would rebuild
    # the channel table under the package table's reference triggers.)
    render_marks = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(parent__isnull=True),
                name="channel_name_unique",
                violation_error_message="A channel with this name already exists.",
            ),
            models.UniqueConstraint(
                fields=["parent", "name"],
                name="subchannel_name_unique_in_parent",
                violation_error_message="This channel already has a subchannel with this name.",
            ),
        ]
        # A subchannel is a Channel row with a parent, governed by the Subchannels category:
        # Django's own view/add/change/delete_channel apply to top-level channels only
        # (channels_app/permissions.py picks the right one per row).
        permissions = [
            ("freeze_channel", "Can freeze and unfreeze channels"),
            ("view_subchannel", "Can view subchannels"),
            ("add_subchannel", "Can add subchannels"),
            ("change_subchannel", "Can change subchannels"),
            ("delete_subchannel", "Can delete subchannels"),
            ("freeze_subchannel", "Can freeze and unfreeze subchannels"),
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def path(self) -> str:
        """`channel` or `channel/subchannel`, as clients and the API address it."""
        return f"{self.parent.name}/{self.name}" if self.parent_id else self.name

    @property
    def covering_ids(self) -> list[int]:
        """This channel and its parent: what a grant or a token must name to cover it."""
        return [pk for pk in (self.pk, self.parent_id) if pk is not None]

    def clean(self) -> None:
        if not self.parent_id and self.name in self.RESERVED_NAMES:
            raise ValidationError({"name": f"{self.name!r} is reserved for client URLs."})
        if self.parent_id:
            if self.parent_id == self.pk:
                raise ValidationError({"parent": "A channel cannot be its own subchannel."})
            if self.parent.parent_id:
                raise ValidationError({"parent": "Subchannels are one level deep only."})
            if self.pk and self.subchannels.exists():
                raise ValidationError({"parent": "A channel with subchannels cannot become one."})
            for kind in dict.fromkeys((self.parent.kind, self.kind)):
                fmt = FORMATS.get(kind)
                if fmt is not None and self.name in fmt.capabilities.reserved_subchannel_names:
                    # The subchannel would hide the parent's own folder of that name.
                    raise ValidationError(
                        {
                            "name": f"{self.name!r} is a folder of every {fmt.label} channel "
                            f"(/api/repo/{self.parent.name}/{self.name}/); "
                            "choose another subchannel name."
                        }
                    )
        if self.pk:
            stored = Channel.objects.filter(pk=self.pk).values_list("kind", flat=True).first()
            if stored is not None and stored != self.kind:
                self._clean_kind_change(stored)
        if self.policy_id and self.kind:
            from policies_app.models import policy_type_problem

            problem = policy_type_problem(self.policy, self.kind)
            if problem:
                raise ValidationError({"policy": problem})
        if self.pk and self.policy_id:
            clash = self.mirrors.filter(policy_id=self.policy_id).first()
            if clash is not None:
                raise ValidationError(
                    {
                        "policy": f"Policy {self.policy.name!r} is already applied to mirror "
                        f"{clash.name!r} of this channel; a policy cannot be on both."
                    }
                )

    def _clean_kind_change(self, stored: str) -> None:
        """Refuse a package type change that would break clients: the index is rendered in the
        new type while the files stay of the old one (every download a 404), a frozen channel
        keeps its old-type index pinned, and a subchannel may come to hide a folder."""
        old = FORMATS[stored].label if stored in FORMATS else stored
        if self.mirrors.exists() or has_rows(Package.objects.filter(channel=self), *BY_FILE):
            raise ValidationError(
                {
                    "kind": f"The package type cannot change: this channel holds {old} mirrors "
                    "or packages, which clients could no longer install. Delete its mirrors "
                    "with their packages first, or create a new channel of the new type."
                }
            )
        if self.frozen:
            raise ValidationError(
                {
                    "kind": f"The package type cannot change while the channel is frozen: its "
                    f"pinned index is a {old} one. Unfreeze it first."
                }
            )
        fmt = FORMATS.get(self.kind)
        reserved = fmt.capabilities.reserved_subchannel_names if fmt is not None else ()
        hiding = sorted(self.subchannels.filter(name__in=reserved).values_list("name", flat=True))
        if hiding:
            raise ValidationError(
                {
                    "kind": f"Subchannel(s) {', '.join(hiding)} would hide folders of every "
                    f"{fmt.label} channel; rename them first."
                }
            )

    def freeze(self, user) -> None:
        self.frozen, self.frozen_by, self.frozen_at = True, user, timezone.now()

    def unfreeze(self) -> None:
        self.frozen, self.frozen_by, self.frozen_at = False, None, None


class ChannelGrant(models.Model):
    """A group's level on one channel (and its subchannels): what makes a private channel
    readable by a team, and lets it write or manage that channel without the category-wide
    permission (channels_app/permissions.py decides)."""

    class Level(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Write"
        MANAGE = "manage", "Manage"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="grants")
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="channel_grants")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.READ)

    class Meta:
        ordering = ["channel", "group__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "group"],
                name="channel_grant_unique",
                violation_error_message="This group already has a grant on this channel.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.level} on {self.channel}"

    @classmethod
    def levels_from(cls, level: str) -> list[str]:
        """The levels that include `level` (read is included in write and manage)."""
        values = list(cls.Level.values)
        return values[values.index(level) :]


class Artifact(models.Model):
    """A stored file, addressed by its sha256 so one copy serves every channel."""

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # When its bytes were last hashed and found good. Storing a file hashes it, so a new file
    # counts as verified; `verification` re-hashes the oldest first.
    verified_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)

    def __str__(self) -> str:
        return self.sha256

    @property
    def storage_path(self) -> str:
        return f"blobs/{self.sha256[:2]}/{self.sha256[2:4]}/{self.sha256}"  # storage.blob_path


#: `Package.excluded_reason` of a new or changed record a run has not decided yet: not served
#: until the run's decision (at its end) lets it in.
PENDING_DECISION = "awaiting the policy's decision"

#: The packages a published index lists: current, allowed, and stored or fetchable on request
#: (`Package.is_servable` of a current row). Publishing renders these; the package browser
#: lists and counts them, through the partial index below.
SERVED = Q(removed=False, excluded_reason="") & (Q(artifact__isnull=False) | Q(on_demand=True))
#: A package file's bytes: the stored file's size, else the size its index gives.
FILE_BYTES = Coalesce("artifact__size", "size")
#: The leading columns of the package table's indexes, to ask along (`querysets.has_rows`):
#: a mirror's rows (`package_mirror_unit`), a channel's files (`package_file_unique_in_channel`).
BY_MIRROR = ("mirror_id", "unit")
BY_FILE = ("channel_id", "unit", "filename")


class Package(models.Model):
    """One file in a channel's index, with the upstream metadata it is served with.

    `artifact` is empty while a passive mirror's file has not been fetched yet; `upstream_url`
    says where to fetch it from.
    """

    # No single-column indexes on `channel` and `mirror`: the composite indexes below lead
    # with them, and every index costs each of a first sync's 600,000 inserted rows. Nor
    # foreign-key constraints: triggers check both once per statement instead of twice per
    # row (migration 0016_package_reference_checks, which says how).
    channel = models.ForeignKey(
        Channel,
        on_delete=models.CASCADE,
        related_name="packages",
        db_index=False,
        db_constraint=False,
    )
    mirror = models.ForeignKey(
        "mirrors_app.Mirror",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="packages",
        db_index=False,
        db_constraint=False,
        help_text="The mirror that brought this package; kept when the mirror is deleted.",
    )
    unit = models.CharField(
        max_length=100,
        blank=True,
        help_text="The index unit: a conda platform, a Python project or a CRAN folder.",
    )
    filename = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    version = models.CharField(max_length=100)
    sha256 = models.CharField(max_length=64, blank=True)
    md5 = models.CharField(max_length=32, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    upstream_url = models.TextField(blank=True)
    # The upstream index entry, verbatim (compact JSON for conda), served back as is.
    record = models.TextField(blank=True)
    # 64-bit digest of `record`: a sync compares it instead of the text to find changes.
    entry_digest = models.BigIntegerField(default=0)
    # `artifact`, `sidecar` and the decision's reasons are indexed only where set (partial
    # indexes below): a passive mirror's rows, unstored and allowed, cost those indexes nothing.
    artifact = models.ForeignKey(
        Artifact,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="packages",
        db_index=False,
    )
    # A file served beside the package (PEP 658 metadata), stored with it in active mode.
    sidecar = models.ForeignKey(
        Artifact,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sidecar_of",
        db_index=False,
    )
    on_demand = models.BooleanField(
        default=False, help_text="Passive: fetched from upstream on its first request."
    )
    removed = models.BooleanField(
        default=False,
        help_text="Gone upstream or filtered out; still served until the next publish drops it.",
    )
    error = models.CharField(
        max_length=500, blank=True, help_text="Why the file could not be mirrored."
    )
    # Why the policy keeps it out (empty: allowed). Excluded packages are kept so that a policy
    # change can be applied without fetching the upstream index again.
    excluded_reason = models.CharField(max_length=300, blank=True)
    # What a dry-run policy would keep out (the file is allowed meanwhile): shown on the
    # mirror's details so a team sees a policy's effect before enforcing it.
    would_exclude_reason = models.CharField(max_length=300, blank=True, default="", db_default="")
    added_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["channel", "unit", "name", "version", "filename"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "unit", "filename"], name="package_file_unique_in_channel"
            ),
        ]
        indexes = [
            models.Index(fields=["channel", "name"], name="package_channel_name"),
            # `include`: a mirror's unit's live rows and digests (the check of a kept document's
            # stamp, every re-sync) by an index-only scan, not a pass over 600,000 records.
            models.Index(
                fields=["mirror", "unit"],
                include=["entry_digest", "removed"],
                name="package_mirror_unit",
            ),
            # The browser's names of a channel (list, search, counts) by index-only scans.
            models.Index(fields=["channel", "name"], condition=SERVED, name="package_served_name"),
            models.Index(
                fields=["artifact"], condition=Q(artifact__isnull=False), name="package_artifact"
            ),
            models.Index(
                fields=["sidecar"], condition=Q(sidecar__isnull=False), name="package_sidecar"
            ),
            # Rows gone upstream, which the next publish deletes: a probe, not a scan of the
            # channel's rows (a conda-forge subdir's 1% re-sync removes 6,000 of 600,000).
            models.Index(fields=["channel"], condition=Q(removed=True), name="package_removed"),
            # Rows a decision marks: kept out, or what a dry-run policy would keep out.
            models.Index(
                fields=["excluded_reason"],
                condition=~Q(excluded_reason="") | ~Q(would_exclude_reason=""),
                name="package_marked",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel}/{self.unit}/{self.filename}" if self.unit else self.filename

    @property
    def path(self) -> str:
        return f"{self.unit}/{self.filename}" if self.unit else self.filename

    @property
    def is_servable(self) -> bool:
        """Allowed, and stored here or a passive file we may fetch on request."""
        return not self.excluded_reason and (self.artifact_id is not None or self.on_demand)

    @property
    def is_stored(self) -> bool:
        """Active (bytes stored locally) rather than passive (fetched on first request)."""
        return self.artifact_id is not None


class PublishedFile(models.Model):
    """An index file clients read (e.g. `linux-64/repodata.json`), as last published.

    A publish renders every index file of a channel to blobs, then replaces the channel's rows in
    one transaction, so clients switch from one consistent snapshot to the next.
    """

    # No index of its own: `published_file_unique` leads with the channel, and a PyPI-sized
    # publish inserts 400,000 rows.
    channel = models.ForeignKey(
        Channel, on_delete=models.CASCADE, related_name="published_files", db_index=False
    )
    path = models.CharField(max_length=255)
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    content_type = models.CharField(max_length=100)
    published_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "path"], name="published_file_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}/{self.path}"


class VerificationProblem(models.Model):
    """A stored file that verification found damaged (or not the file its index entry
    describes), and what it did about it. Open until `resolved_at` is set: at once when the
    fix was immediate, else by the verification that finds the file stored again."""

    class Kind(models.TextChoices):
        PACKAGE = "package", "Package file"
        INDEX = "index", "Index file"

    channel = models.ForeignKey(
        Channel, on_delete=models.CASCADE, related_name="verification_problems"
    )
    mirror = models.ForeignKey(
        "mirrors_app.Mirror",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="verification_problems",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # Package files are named by path, not linked: a foreign key to Package would cost every
    # bulk delete of packages (publishing drops removed ones) its fast path.
    path = models.CharField(max_length=500, help_text="The file's path in the channel.")
    problem = models.CharField(max_length=500)
    action = models.CharField(max_length=500, help_text="What verification did about it.")
    found_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-found_at", "-pk"]
        indexes = [
            models.Index(fields=["channel", "resolved_at"], name="verifyproblem_channel"),
            models.Index(fields=["mirror", "resolved_at"], name="verifyproblem_mirror"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}/{self.path}: {self.problem}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

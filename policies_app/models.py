"""Policies: named rule sets deciding which packages may enter a channel, and CVE data."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models
from django.db.models.expressions import RawSQL
from django.utils import timezone

from channels_app.formats.conda import KNOWN_SUBDIRS, parse_match_spec
from channels_app.formats.licenses import LICENSE_FAMILIES, normalize_license

from .ecosystems import ECOSYSTEMS, ecosystem_for
from .engine import RULES


class Comparator(models.TextChoices):
    LT = "<", "<"
    LE = "<=", "≤"
    GT = ">", ">"
    GE = ">=", "≥"


class CveStatus(models.TextChoices):
    REPORTED = "reported", "Reported"
    ACTIVE = "active", "Active"
    CLEARED = "cleared", "Cleared"
    MITIGATED = "mitigated", "Mitigated"
    DISPUTED = "disputed", "Disputed"


HELP = {
    "package_type": "The type of packages the policy judges: its package rules use that type's "
    "syntax (conda MatchSpecs, PEP 440 specifiers, R version constraints) and its advisories "
    "are those of that ecosystem. It applies only to channels and mirrors of that type.",
    "mode": "Enforce: what the rules block stays out. Dry run: the rules decide and record what "
    "they would block (details, audit log, webhook) while everything enters; malicious packages "
    "are blocked either way.",
    "enforce_on_frozen": "When new advisories, waivers or rule changes block a package, remove "
    "it from the pinned index of frozen channels too (only the newly blocked packages leave). "
    "Otherwise a frozen channel keeps its pinned index and only refuses the blocked downloads.",
    "platforms_include": "Mirror only these platforms (conda subdirs), e.g. linux-64, noarch. "
    "Empty: every platform.",
    "platforms_exclude": "Mirror every platform except these.",
    "licenses_include": "Keep only packages under these licenses: families (MIT, BSD, APACHE, "
    "GPL, GPL2, GPL3, LGPL, AGPL, PSF, MOZILLA, Public-Domain, Proprietary, CC, OTHER) or SPDX "
    "identifiers. Empty: every license.",
    "licenses_exclude": "Drop packages under these licenses (families or SPDX identifiers).",
    "unknown_license": "What to do with a package whose license is missing or not recognised "
    "when a license rule is set.",
    "cve_score": "Keep a package only if the highest CVSS score among its CVEs satisfies "
    "'<comparator> <score>' (0-10). A package with no CVE passes.",
    "cve_statuses_excluded": "Drop a package if any of its CVEs has one of these statuses.",
    "allow_specs": "Package rules that allow, one per line, in the package type's syntax: conda "
    "MatchSpecs ('numpy >=1.26', 'pytorch[build=*cuda*]'), Python 'requests >=2.31', R "
    "'dplyr (>= 1.1)'. When set, the policy is an allow list: only matching packages enter.",
    "block_specs": "Package rules that block, one per line (same syntax).",
    "include_dependencies": "Also mirror the full dependency closure of the allowed packages "
    "(conda: per platform, with noarch; R: Depends, Imports, LinkingTo). Dependencies still "
    "pass the other rules. Needed for the dependency report.",
    "created_after": "Drop packages published before this date (conda `timestamp`, PyPI "
    "`upload-time`, CRAN `Date/Publication`).",
    "created_before": "Drop packages published after this date.",
    "min_age_days": "Supply-chain cooldown: drop packages published fewer than this many days "
    "ago; they enter once old enough, without a sync. A file whose index gives no publication "
    "time counts from the day PSM first saw it.",
    "exclusions": "Exceptions: package rules (same syntax) of packages kept whatever the other "
    "rules say, except malicious-package advisories (only a waiver lets those in).",
    "legacy_packages": "Also mirror .tar.bz2 files when the same build exists as .conda.",
}


def validate_platforms(value: list) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Give a list of platform names.")
    unknown = sorted(set(value) - KNOWN_SUBDIRS)
    if unknown:
        known = ", ".join(sorted(KNOWN_SUBDIRS))
        raise ValidationError(f"Unknown platform(s): {', '.join(unknown)}. Known: {known}.")


def validate_licenses(value: list) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError("Give a list of license families or SPDX identifiers.")
    unknown = sorted(v for v in value if normalize_license(v) is None)
    if unknown:
        families = ", ".join(LICENSE_FAMILIES)
        raise ValidationError(
            f"Unknown license(s): {', '.join(unknown)}. Use a family ({families}) "
            "or an SPDX identifier."
        )


def validate_specs(value: list) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Give a list of conda MatchSpecs.")
    errors = []
    for spec in value:
        try:
            parse_match_spec(spec)
        except ValueError as exc:
            errors.append(f"{spec!r}: {exc}")
    if errors:
        raise ValidationError("Invalid MatchSpec: " + "; ".join(errors))


def validate_string_list(value: list) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Give a list of package rules.")


def validate_statuses(value: list) -> None:
    if not isinstance(value, list) or not set(value) <= set(CveStatus.values):
        raise ValidationError(f"CVE statuses are: {', '.join(CveStatus.values)}.")


class Policy(models.Model):
    """A reusable rule set; applied to a channel or to one mirror, never both at once.

    Rule kinds combine with AND, values within one kind with OR; exclusions re-admit a package
    whatever the other rules say. The engine (`engine.py`) gives each decision a reason.
    """

    class UnknownLicense(models.TextChoices):
        ALLOW = "allow", "Keep"
        BLOCK = "block", "Drop"

    class Mode(models.TextChoices):
        ENFORCE = "enforce", "Enforce"
        DRY_RUN = "dry_run", "Dry run (record what would be blocked, block nothing)"

    name = models.CharField(max_length=100, unique=True, help_text="A unique, descriptive name.")
    description = models.TextField(blank=True)
    package_type = models.CharField(
        max_length=20,
        choices=[(kind, eco.label) for kind, eco in ECOSYSTEMS.items()],
        default="conda",
        help_text=HELP["package_type"],
    )
    mode = models.CharField(
        max_length=10, choices=Mode.choices, default=Mode.ENFORCE, help_text=HELP["mode"]
    )
    enforce_on_frozen = models.BooleanField(
        "enforce on frozen channels", default=False, help_text=HELP["enforce_on_frozen"]
    )
    platforms_include = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_platforms],
        help_text=HELP["platforms_include"],
    )
    platforms_exclude = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_platforms],
        help_text=HELP["platforms_exclude"],
    )
    licenses_include = models.JSONField(
        default=list, blank=True, validators=[validate_licenses], help_text=HELP["licenses_include"]
    )
    licenses_exclude = models.JSONField(
        default=list, blank=True, validators=[validate_licenses], help_text=HELP["licenses_exclude"]
    )
    unknown_license = models.CharField(
        max_length=5,
        choices=UnknownLicense.choices,
        default=UnknownLicense.ALLOW,
        help_text=HELP["unknown_license"],
    )
    cve_score = models.DecimalField(
        "CVE score",
        max_digits=3,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(10)],
        help_text=HELP["cve_score"],
    )
    cve_score_comparator = models.CharField(
        "CVE score comparator", max_length=2, choices=Comparator.choices, default=Comparator.LT
    )
    cve_statuses_excluded = models.JSONField(
        "CVE statuses excluded",
        default=list,
        blank=True,
        validators=[validate_statuses],
        help_text=HELP["cve_statuses_excluded"],
    )
    allow_specs = models.JSONField(
        "allow package rules",
        default=list,
        blank=True,
        validators=[validate_string_list],
        help_text=HELP["allow_specs"],
    )
    block_specs = models.JSONField(
        "block package rules",
        default=list,
        blank=True,
        validators=[validate_string_list],
        help_text=HELP["block_specs"],
    )
    include_dependencies = models.BooleanField(
        default=False, help_text=HELP["include_dependencies"]
    )
    created_after = models.DateField(null=True, blank=True, help_text=HELP["created_after"])
    created_before = models.DateField(null=True, blank=True, help_text=HELP["created_before"])
    min_age_days = models.PositiveIntegerField(
        "minimum age (days)", null=True, blank=True, help_text=HELP["min_age_days"]
    )
    exclusions = models.JSONField(
        default=list, blank=True, validators=[validate_string_list], help_text=HELP["exclusions"]
    )
    legacy_packages = models.BooleanField(default=False, help_text=HELP["legacy_packages"])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.created_after and self.created_before and self.created_after > self.created_before:
            errors["created_before"] = "Must not be before 'created after'."
        both = set(self.platforms_include or []) & set(self.platforms_exclude or [])
        if both:
            errors["platforms_exclude"] = f"Both included and excluded: {', '.join(sorted(both))}."
        ecosystem = ecosystem_for(self.package_type) if self.package_type in ECOSYSTEMS else None
        if ecosystem is not None:
            for name in ("allow_specs", "block_specs", "exclusions"):
                problems = spec_problems(ecosystem, getattr(self, name) or [])
                if problems:
                    errors[name] = problems
            for name, why in rule_fields_unsupported(self, ecosystem).items():
                errors[name] = f"Not for {ecosystem.label} packages: {why}."
        if self.pk and self.package_type:
            errors.update(self._attachments_of_other_types())
        if errors:
            raise ValidationError(errors)

    def _attachments_of_other_types(self) -> dict[str, str]:
        """A policy changing type must not stay on channels or mirrors of its old type."""
        from channels_app.models import Channel
        from mirrors_app.models import Mirror

        channels = Channel.objects.filter(policy=self).exclude(kind=self.package_type)
        mirrors = Mirror.objects.filter(policy=self).exclude(channel__kind=self.package_type)
        used = [f"channel {c.path!r}" for c in channels[:3]]
        used += [f"mirror {m.name!r}" for m in mirrors[:3]]
        if not used:
            return {}
        return {
            "package_type": f"The policy is applied to {', '.join(used)} of another package "
            "type; detach it first."
        }

    @property
    def has_dependency_report(self) -> bool:
        return bool(self.allow_specs) and self.include_dependencies


def spec_problems(ecosystem, texts: list[str]) -> str:
    """What is wrong with package rules in the ecosystem's syntax ("" when nothing)."""
    errors = []
    for text in texts:
        try:
            ecosystem.parse_spec(text)
        except ValueError as exc:
            errors.append(f"{text!r}: {exc}")
    if not errors:
        return ""
    return f"Not {ecosystem.spec_syntax} (e.g. {ecosystem.spec_example!r}): " + "; ".join(errors)


#: The policy fields of each rule kind that some package types cannot judge
#: (`Ecosystem.unsupported_rules`).
RULE_FIELDS = {
    "platforms": ("platforms_include", "platforms_exclude"),
    "licenses": ("licenses_include", "licenses_exclude", "unknown_license"),
    "include_dependencies": ("include_dependencies",),
    "legacy_packages": ("legacy_packages",),
}


def rule_fields_unsupported(policy: Policy, ecosystem) -> dict[str, str]:
    """Rules set on the policy that its package type's index cannot judge, with why."""
    found = {}
    for rule, why in ecosystem.unsupported_rules.items():
        for name in RULE_FIELDS[rule]:
            if name != "unknown_license" and getattr(policy, name):
                found[name] = why
    return found


def rule_field_scope(name: str) -> str:
    """Which package types a policy field applies to, and why not the others ("" for all)."""
    rule = next((r for r, names in RULE_FIELDS.items() if name in names), None)
    if rule is None:
        return ""
    used = [e.label for e in ECOSYSTEMS.values() if rule not in e.unsupported_rules]
    others = [
        f"{e.label} ({e.unsupported_rules[rule]})"
        for e in ECOSYSTEMS.values()
        if rule in e.unsupported_rules
    ]
    text = f"For {' and '.join(used)} policies only."
    return text + (f" Not for {' nor '.join(others)}." if others else "")


def policy_type_problem(policy: Policy | None, kind: str) -> str:
    """Why `policy` cannot apply to a channel of package type `kind` ("" when it can)."""
    if policy is None or policy.package_type == kind:
        return ""
    return (
        f"Policy {policy.name!r} judges {ecosystem_for(policy.package_type).label} packages; "
        f"this channel holds {ecosystem_for(kind).label} packages."
    )


#: What a waiver may name instead of an advisory.
WAIVABLE_RULES = frozenset(RULES)
_ADVISORY_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9][A-Za-z0-9._:-]*")


class Waiver(models.Model):
    """An exception to a policy's rule: lets matching packages in despite one advisory or rule
    kind, for a reason, until it expires (then the next enforcement blocks them again)."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="waivers")
    spec = models.CharField(
        "package rule",
        max_length=300,
        help_text="Which packages: a package rule in the policy's syntax (e.g. 'requests "
        "<2.32', 'numpy', 'dplyr (>= 1.1)').",
    )
    rule = models.CharField(
        "advisory or rule",
        max_length=100,
        help_text="What it waives: an advisory id or alias (GHSA-…, CVE-…, PYSEC-…, MAL-…), "
        f"or a rule: {', '.join(sorted(WAIVABLE_RULES))}.",
    )
    reason = models.TextField(help_text="Why the exception is acceptable (shown in decisions).")
    expires_at = models.DateTimeField(help_text="The waiver stops applying at this time.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["policy", "expires_at"]

    def __str__(self) -> str:
        return f"{self.spec} / {self.rule}"

    @property
    def is_active(self) -> bool:
        return self.expires_at > timezone.now()

    def clean(self) -> None:
        errors = {}
        if self.policy_id:
            problem = spec_problems(ecosystem_for(self.policy.package_type), [self.spec])
            if problem:
                errors["spec"] = problem
        rule = (self.rule or "").strip()
        self.rule = rule
        if rule and rule not in WAIVABLE_RULES and not _ADVISORY_ID.fullmatch(rule):
            errors["rule"] = (
                f"{rule!r} is neither an advisory id (e.g. GHSA-xxxx-xxxx-xxxx, CVE-2024-1234) "
                f"nor a rule ({', '.join(sorted(WAIVABLE_RULES))})."
            )
        # A new waiver must apply for a while; an existing one may be ended early.
        if self._state.adding and self.expires_at and self.expires_at <= timezone.now():
            errors["expires_at"] = "Must be in the future."
        if errors:
            raise ValidationError(errors)


class NameMapping(models.Model):
    """A conda package name and the name of the same software in another ecosystem (PyPI),
    from a mapping file in the format conda-forge publishes (see `mapping.py`): advisories of
    that ecosystem apply to the conda package only through these rows."""

    conda_name = models.CharField(max_length=255, db_index=True)
    ecosystem = models.CharField(max_length=20, default="PyPI")
    name = models.CharField(max_length=255)
    source = models.CharField(max_length=500, blank=True, help_text="The file it was loaded from.")
    loaded_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["conda_name", "ecosystem", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["conda_name", "ecosystem", "name"], name="name_mapping_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.conda_name} → {self.ecosystem}:{self.name}"


class VulnerabilityQuerySet(models.QuerySet):
    def affecting(self, name: str) -> VulnerabilityQuerySet:
        """Advisories with an `affected` entry for the package `name` (as given, or in lower
        case, as names are compared)."""
        names = sorted({name, name.lower()})
        if connection.vendor == "postgresql":  # JSON containment (SQLite has none)
            query = models.Q()
            for each in names:
                query |= models.Q(affected__contains=[{"name": each}])
            return self.filter(query)
        marks = ", ".join(["%s"] * len(names))
        table = self.model._meta.db_table
        entry_named = RawSQL(
            f"EXISTS (SELECT 1 FROM json_each({table}.affected) "
            f"WHERE json_extract(json_each.value, '$.name') IN ({marks}))",
            names,
            output_field=models.BooleanField(),
        )
        return self.filter(entry_named)


class Vulnerability(models.Model):
    """One advisory (OSV format): its score, status and the package versions it affects."""

    osv_id = models.CharField("id", max_length=100, unique=True)
    aliases = models.JSONField(default=list, blank=True, help_text="e.g. CVE identifiers.")
    summary = models.TextField(blank=True)
    cvss_score = models.DecimalField(
        "CVSS score", max_digits=3, decimal_places=1, null=True, blank=True
    )
    cvss_vector = models.CharField("CVSS vector", max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=CveStatus.choices, default=CveStatus.REPORTED)
    # [{"ecosystem": "conda", "name": "openssl", "ranges": [...], "versions": [...]}] as in OSV.
    affected = models.JSONField(default=list, blank=True)
    # "|PyPI|CRAN|": the OSV ecosystems of `affected`, so a policy reads only its own.
    ecosystems = models.CharField(max_length=200, blank=True, default="", db_index=True)
    # A malicious-package entry (an `MAL-` id or alias, as OpenSSF's malicious-packages
    # publishes them): blocks every affected version whatever the score rules say.
    malicious = models.BooleanField(default=False, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    loaded_at = models.DateTimeField(auto_now=True)

    objects = VulnerabilityQuerySet.as_manager()

    class Meta:
        ordering = ["osv_id"]
        verbose_name_plural = "vulnerabilities"

    def __str__(self) -> str:
        return self.osv_id

    @property
    def cve_ids(self) -> list[str]:
        return [a for a in [self.osv_id, *self.aliases] if a.startswith("CVE-")]

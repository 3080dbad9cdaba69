"""Policies: named rule sets deciding which packages may enter a channel, and CVE data."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from channels_app.formats.conda import KNOWN_SUBDIRS, parse_match_spec
from channels_app.formats.licenses import LICENSE_FAMILIES, normalize_license


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
    "allow_specs": "Package rules that allow: conda MatchSpecs, one per line (e.g. "
    "'numpy >=1.26', 'python 3.12.*', 'pytorch[build=*cuda*]'). When set, the policy is an "
    "allow list: only matching packages enter.",
    "block_specs": "Package rules that block: conda MatchSpecs, one per line.",
    "include_dependencies": "Also mirror the full dependency closure of the allowed packages "
    "(per platform, with noarch). Dependencies still pass the platform, license, CVE, date and "
    "block rules. Needed for the dependency report.",
    "created_after": "Drop packages built before this date.",
    "created_before": "Drop packages built after this date.",
    "min_age_days": "Supply-chain cooldown: drop packages newer than this many days.",
    "exclusions": "Exceptions: MatchSpecs of packages kept whatever the other rules say.",
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

    name = models.CharField(max_length=100, unique=True, help_text="A unique, descriptive name.")
    description = models.TextField(blank=True)
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
        validators=[validate_specs],
        help_text=HELP["allow_specs"],
    )
    block_specs = models.JSONField(
        "block package rules",
        default=list,
        blank=True,
        validators=[validate_specs],
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
        default=list, blank=True, validators=[validate_specs], help_text=HELP["exclusions"]
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
        if self.created_after and self.created_before and self.created_after > self.created_before:
            raise ValidationError({"created_before": "Must not be before 'created after'."})
        both = set(self.platforms_include or []) & set(self.platforms_exclude or [])
        if both:
            raise ValidationError(
                {"platforms_exclude": f"Both included and excluded: {', '.join(sorted(both))}."}
            )

    @property
    def has_dependency_report(self) -> bool:
        return bool(self.allow_specs) and self.include_dependencies


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
    published_at = models.DateTimeField(null=True, blank=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    loaded_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["osv_id"]
        verbose_name_plural = "vulnerabilities"

    def __str__(self) -> str:
        return self.osv_id

    @property
    def cve_ids(self) -> list[str]:
        return [a for a in [self.osv_id, *self.aliases] if a.startswith("CVE-")]

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from channels_app.formats.conda import KNOWN_SUBDIRS

from . import services
from .ecosystems import ECOSYSTEMS
from .models import CveStatus, NameMapping, Policy, Vulnerability, Waiver, rule_field_scope


class LinesField(forms.CharField):
    """A list of strings edited in a text area, one value per line (blank lines dropped).
    Lines, not commas: a MatchSpec may hold commas ("numpy >=1.26,<2")."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        lines = (line.strip() for line in str(value or "").splitlines())
        return list(dict.fromkeys(line for line in lines if line))  # drop repeats, keep order


def _lines(name: str, label: str) -> LinesField:
    help_text = Policy._meta.get_field(name).help_text
    if "one per line" not in help_text:
        help_text += " One per line."
    return LinesField(label=label, required=False, help_text=help_text)


def _platform_choices() -> list[tuple[str, str]]:
    return [(s, s) for s in sorted(KNOWN_SUBDIRS, key=lambda s: (s != "noarch", s))]


# Choice fields a form may leave out: the policy keeps its value.
CHOICES_KEPT = ("package_type", "mode", "unknown_license", "cve_score_comparator")


class PolicyForm(forms.ModelForm):
    """Lists are text areas (one value per line) or checkboxes; the model's validators run on
    the resulting lists, so their messages show next to the field."""

    platforms_include = forms.MultipleChoiceField(
        label="Platforms included",
        choices=_platform_choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=Policy._meta.get_field("platforms_include").help_text,
    )
    platforms_exclude = forms.MultipleChoiceField(
        label="Platforms excluded",
        choices=_platform_choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=Policy._meta.get_field("platforms_exclude").help_text,
    )
    licenses_include = _lines("licenses_include", "Licenses included")
    licenses_exclude = _lines("licenses_exclude", "Licenses excluded")
    allow_specs = _lines("allow_specs", "Allow package rules")
    block_specs = _lines("block_specs", "Block package rules")
    exclusions = _lines("exclusions", "Exclusions")
    cve_statuses_excluded = forms.MultipleChoiceField(
        label="CVE statuses excluded",
        choices=CveStatus.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=Policy._meta.get_field("cve_statuses_excluded").help_text,
    )

    class Meta:
        model = Policy
        fields = [
            "name",
            "description",
            "package_type",
            "mode",
            "enforce_on_frozen",
            "platforms_include",
            "platforms_exclude",
            "licenses_include",
            "licenses_exclude",
            "unknown_license",
            "cve_score_comparator",
            "cve_score",
            "cve_statuses_excluded",
            "allow_specs",
            "block_specs",
            "include_dependencies",
            "created_after",
            "created_before",
            "min_age_days",
            "exclusions",
            "legacy_packages",
        ]
        widgets = {
            "unknown_license": forms.RadioSelect,
            "package_type": forms.RadioSelect,
            "mode": forms.RadioSelect,
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Choices with a default: a form that leaves them out keeps the policy's value (the
        # default for a new one). (A read-only page, for the view permission alone, has a form
        # without fields.)
        for name in CHOICES_KEPT:
            if name in self.fields:
                self.fields[name].required = False
        for name, field in self.fields.items():
            scope = rule_field_scope(name)
            if scope:
                field.help_text = f"{field.help_text} {scope}"

    def clean(self):
        data = super().clean()
        for name in CHOICES_KEPT:
            if name in self.fields and not data.get(name) and name not in self.errors:
                data[name] = getattr(self.instance, name)
        return data


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def policy_summary(policy: Policy) -> list[str]:
    """What the policy enforces, in plain language: one sentence per rule kind."""
    ecosystem = ECOSYSTEMS.get(policy.package_type)
    label = ecosystem.label if ecosystem else policy.package_type
    lines: list[str] = [f"Judges {label} packages."]
    if policy.mode == Policy.Mode.DRY_RUN:
        lines.append(
            "Dry run: records what the rules would block and lets it in (malicious packages "
            "are blocked all the same)."
        )
    if policy.enforce_on_frozen:
        lines.append("Newly blocked packages also leave the pinned index of frozen channels.")
    rules_from = len(lines)
    if policy.platforms_include:
        lines.append(f"Only platforms {_join(policy.platforms_include)}.")
    if policy.platforms_exclude:
        lines.append(f"Drops platforms {_join(policy.platforms_exclude)}.")
    if policy.licenses_include:
        lines.append(f"Keeps only licenses {_join(policy.licenses_include)}.")
    if policy.licenses_exclude:
        lines.append(f"Drops licenses {_join(policy.licenses_exclude)}.")
    if policy.licenses_include or policy.licenses_exclude:
        verb = "kept" if policy.unknown_license == Policy.UnknownLicense.ALLOW else "dropped"
        lines.append(f"Packages with a missing or unrecognised license are {verb}.")
    if policy.cve_score is not None:
        lines.append(
            "Keeps packages whose highest CVE score is "
            f"{policy.cve_score_comparator} {_number(policy.cve_score)}."
        )
    if policy.cve_statuses_excluded:
        lines.append(
            f"Drops packages with a CVE whose status is {_join(policy.cve_statuses_excluded)}."
        )
    if policy.allow_specs:
        deps = " (and their dependencies)" if policy.include_dependencies else ""
        lines.append(f"Allows only: {_join(policy.allow_specs)}{deps}.")
    if policy.block_specs:
        lines.append(f"Blocks: {_join(policy.block_specs)}.")
    if policy.created_after:
        lines.append(f"Drops packages built before {policy.created_after:%Y-%m-%d}.")
    if policy.created_before:
        lines.append(f"Drops packages built after {policy.created_before:%Y-%m-%d}.")
    if policy.min_age_days:
        lines.append(f"Drops packages newer than {policy.min_age_days} days (cooldown).")
    if policy.exclusions:
        lines.append(f"Always keeps: {_join(policy.exclusions)}, whatever the other rules say.")
    if len(lines) == rules_from:
        lines.append("No rules: every package is kept.")
    if ecosystem is not None and "legacy_packages" in ecosystem.unsupported_rules:
        return lines
    if policy.legacy_packages:
        lines.append("Also mirrors .tar.bz2 files when the same build exists as .conda.")
    else:
        lines.append("Skips .tar.bz2 files when the same build exists as .conda.")
    return lines


class WaiverInline(admin.TabularInline):
    """A policy's waivers, on its change page; saved through the services (audited)."""

    model = Waiver
    extra = 0
    fields = ["spec", "rule", "reason", "expires_at", "creator", "active"]
    readonly_fields = ["creator", "active"]
    formfield_overrides = {
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 2, "cols": 40})}
    }

    @admin.display(boolean=True, description="Active")
    def active(self, waiver: Waiver) -> bool | None:
        return waiver.is_active if waiver.pk else None

    @admin.display(description="Created by")
    def creator(self, waiver: Waiver) -> str:
        return waiver.created_by_name


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    list_display = [
        "name",
        "package_type",
        "mode",
        "description",
        "channel_count",
        "mirror_count",
        "updated_at",
    ]
    list_filter = ["package_type", "mode"]
    search_fields = ["name", "description"]
    readonly_fields = ["summary", "test_package"]
    inlines = [WaiverInline]

    def get_fieldsets(self, request, obj=None):
        details = ["name", "description", "package_type"]
        if obj is not None:
            details += ["summary", "test_package"]
        return [
            ("Details", {"fields": details}),
            ("Enforcement", {"fields": ["mode", "enforce_on_frozen"]}),
            ("Platforms", {"fields": ["platforms_include", "platforms_exclude"]}),
            ("Licenses", {"fields": ["licenses_include", "licenses_exclude", "unknown_license"]}),
            ("CVEs", {"fields": ["cve_score_comparator", "cve_score", "cve_statuses_excluded"]}),
            ("Package rules", {"fields": ["allow_specs", "block_specs", "include_dependencies"]}),
            ("Dates", {"fields": ["created_after", "created_before", "min_age_days"]}),
            ("Exclusions and legacy", {"fields": ["exclusions", "legacy_packages"]}),
        ]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # waivers go on a saved policy

    def save_formset(self, request, form, formset, change) -> None:
        if formset.model is not Waiver:
            return super().save_formset(request, form, formset, change)
        # Through the services (audited, enforcement queued), not the formset's own save.
        for waiver in formset.save(commit=False):
            services.waiver_save(waiver=waiver, user=request.user)
        for waiver in formset.deleted_objects:
            services.waiver_delete(waiver=waiver, user=request.user)
        return None

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _channels=Count("channels", distinct=True), _mirrors=Count("mirrors", distinct=True)
            )
        )

    def save_model(self, request, obj, form, change) -> None:
        services.policy_save(policy=obj, user=request.user)

    def delete_model(self, request, obj) -> None:
        services.policy_delete(policy=obj, user=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for policy in queryset:
            services.policy_delete(policy=policy, user=request.user)

    @admin.display(description="What this policy enforces")
    def summary(self, policy: Policy):
        return format_html(
            "<ul style='margin-left: 0; padding-left: 1em'>{}</ul>",
            format_html_join("", "<li>{}</li>", ((line,) for line in policy_summary(policy))),
        )

    @admin.display(description="Test a package")
    def test_package(self, policy: Policy):
        url = reverse("admin:mirrors_app_test_package") + f"?policy={policy.pk}"
        return format_html(
            "<a href='{}'>Test a package</a> against a channel of this package type: what "
            "each rule decides, and why.",
            url,
        )

    @admin.display(description="Channels", ordering="_channels")
    def channel_count(self, policy: Policy) -> int:
        return policy._channels

    @admin.display(description="Mirrors", ordering="_mirrors")
    def mirror_count(self, policy: Policy) -> int:
        return policy._mirrors


class EcosystemFilter(admin.SimpleListFilter):
    """The OSV ecosystems advisories name (`Vulnerability.ecosystems`, "|PyPI|CRAN|")."""

    title = "ecosystem"
    parameter_name = "ecosystem"

    def lookups(self, request, model_admin):
        found = set()
        for value in Vulnerability.objects.values_list("ecosystems", flat=True).distinct():
            found.update(e for e in value.split("|") if e)
        return [(e, e) for e in sorted(found)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(ecosystems__contains=f"|{self.value()}|")
        return queryset


@admin.register(Vulnerability)
class VulnerabilityAdmin(admin.ModelAdmin):
    """Advisories are loaded from OSV data, never edited by hand."""

    list_display = [
        "osv_id",
        "alias_list",
        "packages",
        "cvss_score",
        "status",
        "malicious",
        "modified_at",
    ]
    list_filter = ["status", "malicious", EcosystemFilter]
    search_fields = ["osv_id", "aliases", "summary"]
    show_full_result_count = False

    @admin.display(description="Aliases")
    def alias_list(self, vulnerability: Vulnerability) -> str:
        return _join(vulnerability.aliases)

    @admin.display(description="Packages")
    def packages(self, vulnerability: Vulnerability) -> str:
        """Each affected package with its OSV ecosystem: "PyPI: requests"."""
        names = (
            f"{a.get('ecosystem', '')}: {a.get('name', '')}"
            for a in vulnerability.affected
            if isinstance(a, dict) and a.get("name")
        )
        return _join(dict.fromkeys(names))

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:  # an affected package, by exact name (names are compared in lower case)
            found |= queryset.affecting(term)
        return found, may_have_duplicates

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class WaiverStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


@admin.register(Waiver)
class WaiverAdmin(admin.ModelAdmin):
    """Every policy's waivers; created, changed and deleted through the services (audited,
    and the policy's mirrors are decided again)."""

    list_display = [
        "spec",
        "rule",
        "policy",
        "short_reason",
        "expires_at",
        "active",
        "creator",
        "created_at",
    ]
    list_filter = [WaiverStatusFilter, "policy__package_type", "policy"]
    search_fields = ["spec", "rule", "reason", "policy__name", "created_by_name"]
    list_select_related = ["policy"]
    fields = ["policy", "spec", "rule", "reason", "expires_at", "creator", "created_at"]
    readonly_fields = ["creator", "created_at"]

    def save_model(self, request, obj, form, change) -> None:
        services.waiver_save(waiver=obj, user=request.user)

    def delete_model(self, request, obj) -> None:
        services.waiver_delete(waiver=obj, user=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for waiver in queryset.select_related("policy"):
            services.waiver_delete(waiver=waiver, user=request.user)

    @admin.display(description="Reason")
    def short_reason(self, waiver: Waiver) -> str:
        return Truncator(waiver.reason).chars(80)

    @admin.display(boolean=True, description="Active", ordering="expires_at")
    def active(self, waiver: Waiver) -> bool:
        return waiver.is_active

    @admin.display(description="Created by", ordering="created_by_name")
    def creator(self, waiver: Waiver) -> str:
        return waiver.created_by_name


@admin.register(NameMapping)
class NameMappingAdmin(admin.ModelAdmin):
    """The conda → PyPI name mapping, loaded from a file (`load_name_mapping`), read-only."""

    list_display = ["conda_name", "ecosystem", "name", "source", "loaded_at"]
    list_filter = ["ecosystem", "source"]
    search_fields = ["conda_name", "name"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

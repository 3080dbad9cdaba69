from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db.models import Count
from django.utils.html import format_html, format_html_join

from channels_app.formats.conda import KNOWN_SUBDIRS

from . import services
from .models import CveStatus, Policy, Vulnerability


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
        widgets = {"unknown_license": forms.RadioSelect}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Choices with a default: a form that leaves them out keeps the default. (A read-only
        # page, for the view permission alone, has a form without fields.)
        for name in ("unknown_license", "cve_score_comparator"):
            if name in self.fields:
                self.fields[name].required = False

    def clean_unknown_license(self) -> str:
        return self.cleaned_data.get("unknown_license") or Policy.UnknownLicense.ALLOW

    def clean_cve_score_comparator(self) -> str:
        return (
            self.cleaned_data.get("cve_score_comparator")
            or Policy._meta.get_field("cve_score_comparator").get_default()
        )


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def policy_summary(policy: Policy) -> list[str]:
    """What the policy enforces, in plain language: one sentence per rule kind."""
    lines: list[str] = []
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
    if not lines:
        lines.append("No rules: every package is kept.")
    if policy.legacy_packages:
        lines.append("Also mirrors .tar.bz2 files when the same build exists as .conda.")
    else:
        lines.append("Skips .tar.bz2 files when the same build exists as .conda.")
    return lines


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    list_display = ["name", "description", "channel_count", "mirror_count", "updated_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["summary"]

    def get_fieldsets(self, request, obj=None):
        details = ["name", "description"] + (["summary"] if obj is not None else [])
        return [
            ("Details", {"fields": details}),
            ("Platforms", {"fields": ["platforms_include", "platforms_exclude"]}),
            ("Licenses", {"fields": ["licenses_include", "licenses_exclude", "unknown_license"]}),
            ("CVEs", {"fields": ["cve_score_comparator", "cve_score", "cve_statuses_excluded"]}),
            ("Package rules", {"fields": ["allow_specs", "block_specs", "include_dependencies"]}),
            ("Dates", {"fields": ["created_after", "created_before", "min_age_days"]}),
            ("Exclusions and legacy", {"fields": ["exclusions", "legacy_packages"]}),
        ]

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

    @admin.display(description="Channels", ordering="_channels")
    def channel_count(self, policy: Policy) -> int:
        return policy._channels

    @admin.display(description="Mirrors", ordering="_mirrors")
    def mirror_count(self, policy: Policy) -> int:
        return policy._mirrors


@admin.register(Vulnerability)
class VulnerabilityAdmin(admin.ModelAdmin):
    """Advisories are loaded from OSV data, never edited by hand."""

    list_display = ["osv_id", "alias_list", "packages", "cvss_score", "status", "modified_at"]
    list_filter = ["status"]
    search_fields = ["osv_id", "aliases", "summary"]
    show_full_result_count = False

    @admin.display(description="Aliases")
    def alias_list(self, vulnerability: Vulnerability) -> str:
        return _join(vulnerability.aliases)

    @admin.display(description="Packages")
    def packages(self, vulnerability: Vulnerability) -> str:
        names = (a.get("name", "") for a in vulnerability.affected if isinstance(a, dict))
        return _join(dict.fromkeys(n for n in names if n))

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:  # an affected package, by exact name (names are compared in lower case)
            names = {term, term.lower()}
            for name in names:
                found |= queryset.filter(affected__contains=[{"name": name}])
        return found, may_have_duplicates

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

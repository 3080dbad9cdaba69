from __future__ import annotations

from rest_framework import serializers

from psm.api import FullCleanMixin

from ..models import NameMapping, Policy, Vulnerability, Waiver, rule_field_scope

# JSON list fields: typed as lists of strings here; what the strings may be (platforms,
# licenses, MatchSpecs, statuses) is checked by the model's validators through full_clean().
LIST_FIELDS = (
    "platforms_include",
    "platforms_exclude",
    "licenses_include",
    "licenses_exclude",
    "cve_statuses_excluded",
    "allow_specs",
    "block_specs",
    "exclusions",
)


class PolicySerializer(FullCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Policy
        fields = [
            "id",
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
            "cve_score",
            "cve_score_comparator",
            "cve_statuses_excluded",
            "allow_specs",
            "block_specs",
            "include_dependencies",
            "created_after",
            "created_before",
            "min_age_days",
            "exclusions",
            "legacy_packages",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def build_field(self, field_name, info, model_class, nested_depth):
        if field_name in LIST_FIELDS:
            model_field = model_class._meta.get_field(field_name)
            field_class, kwargs = (
                serializers.ListField,
                {
                    "child": serializers.CharField(allow_blank=False, trim_whitespace=True),
                    "required": False,
                    "help_text": model_field.help_text,
                    "label": model_field.verbose_name.capitalize(),
                },
            )
        else:
            field_class, kwargs = super().build_field(field_name, info, model_class, nested_depth)
        scope = rule_field_scope(field_name)
        if scope and kwargs.get("help_text"):
            kwargs["help_text"] = f"{kwargs['help_text']} {scope}"
        return field_class, kwargs


class WaiverSerializer(FullCleanMixin, serializers.ModelSerializer):
    created_by = serializers.CharField(
        source="created_by_name", read_only=True, help_text="Who created the waiver."
    )
    active = serializers.BooleanField(
        source="is_active", read_only=True, help_text="Whether it applies now (not expired)."
    )

    class Meta:
        model = Waiver
        fields = [
            "id",
            "policy",
            "spec",
            "rule",
            "reason",
            "expires_at",
            "active",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["created_at"]


class NameMappingSerializer(serializers.ModelSerializer):
    class Meta:
        model = NameMapping
        fields = ["id", "conda_name", "ecosystem", "name", "source", "loaded_at"]
        read_only_fields = fields


class VulnerabilitySerializer(serializers.ModelSerializer):
    aliases = serializers.ListField(child=serializers.CharField(), read_only=True)
    affected = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text="The affected packages and versions, as in OSV.",
    )

    class Meta:
        model = Vulnerability
        fields = [
            "id",
            "osv_id",
            "aliases",
            "summary",
            "cvss_score",
            "cvss_vector",
            "status",
            "affected",
            "published_at",
            "modified_at",
            "loaded_at",
        ]
        read_only_fields = fields

"""Shared pieces of the REST API."""

from __future__ import annotations

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers


class FullCleanMixin:
    """Run the model's `full_clean()` (field validators, `clean()`, constraints) in `validate`.

    The model is the one place its rules live; the API reports the same messages as the admin.
    """

    def validate(self, attrs):
        attrs = super().validate(attrs)
        instance = copy.copy(self.instance) if self.instance else self.Meta.model()
        for name, value in attrs.items():
            if name in self.clean_skip_fields():
                continue
            setattr(instance, name, value)
        try:
            instance.full_clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(serializers.as_serializer_error(exc)) from None
        # full_clean may normalise values (e.g. cron presets): hand them back.
        for name in attrs:
            if name not in self.clean_skip_fields() and hasattr(instance, name):
                attrs[name] = getattr(instance, name)
        return attrs

    def clean_skip_fields(self) -> set[str]:
        """Write-only fields that are not model fields."""
        return set()

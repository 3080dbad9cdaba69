"""Shared pieces of the REST API."""

from __future__ import annotations

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import DataAndFiles

from .input import unusable_text


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


# --- Bad input: a 400 (or a clamp), never a 500 ------------------------------------------------

# Past what PostgreSQL counts in a LIMIT or OFFSET (bigint); no table comes near it.
LARGEST_PAGE_BOUND = 2**62


class Pagination(LimitOffsetPagination):
    """DRF's limit/offset pagination, with a limit or offset past what the database can count
    clamped (an offset past the end is an empty page, as any other, not a 500)."""

    max_limit = LARGEST_PAGE_BOUND

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), LARGEST_PAGE_BOUND)


class _RefuseUnusableText:
    """A parser that refuses a body holding text no field can take (400), instead of letting
    it reach a query (a 500) or be echoed in an error the renderer cannot encode (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        data = parsed.data if isinstance(parsed, DataAndFiles) else parsed
        if unusable_text(data) is not None:
            raise ParseError("The body holds a NUL character or an invalid (surrogate) one.")
        return parsed


class JSONParser(_RefuseUnusableText, parsers.JSONParser):
    pass


class FormParser(_RefuseUnusableText, parsers.FormParser):
    pass


class MultiPartParser(_RefuseUnusableText, parsers.MultiPartParser):
    pass

from __future__ import annotations

from rest_framework import serializers

from psm.api import FullCleanMixin

from ..models import Policy


class PolicySerializer(FullCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Policy
        fields = ["id", "name", "description", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

from __future__ import annotations

import re

from django.contrib.auth.models import Group
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from psm.api import FullCleanMixin

from ..formats import kind_choices
from ..models import Channel, ChannelGrant, VerificationProblem
from ..permissions import visible_channels

# `channel` or `channel/subchannel`, each a channel name (checked before any query).
CHANNEL_PATH = re.compile(r"/?[a-z0-9][a-z0-9_-]{0,99}(/[a-z0-9][a-z0-9_-]{0,99})?/?")


class ChannelSerializer(FullCleanMixin, serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=kind_choices(), help_text=Channel.kind.field.help_text)
    path = serializers.CharField(read_only=True)
    parent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    frozen_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    subchannels = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Channel
        fields = [
            "id",
            "name",
            "path",
            "description",
            "kind",
            "parent",
            "visibility",
            "policy",
            "frozen",
            "frozen_by",
            "frozen_at",
            "subchannels",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["frozen", "frozen_at", "created_at", "updated_at"]
        # Uniqueness is checked by the model's constraints in full_clean().
        validators = []

    def validate(self, attrs):
        parent = self.context.get("parent")
        if parent is not None and self.instance is None:
            attrs["parent"] = parent
        return super().validate(attrs)


@extend_schema_field(OpenApiTypes.STR)
class ChannelPathField(serializers.RelatedField):
    """A channel written and shown as its path: `channel` or `channel/subchannel`.

    Only channels the requesting user may know are found (`visible_channels`): naming a
    private channel one may not read is answered exactly as naming a missing one."""

    default_error_messages = {
        "does_not_exist": "Channel {value!r} does not exist.",
        "invalid": "Give the channel as 'channel' or 'channel/subchannel'.",
    }

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("queryset", Channel.objects.select_related("parent"))
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        return visible_channels(getattr(request, "user", None), super().get_queryset())

    def to_internal_value(self, data):
        if not isinstance(data, str) or not data.strip("/"):
            self.fail("invalid")
        if not CHANNEL_PATH.fullmatch(data):
            self.fail("does_not_exist", value=data)  # no channel has such a name
        try:
            return self.get_queryset().get_by_path(data)
        except Channel.DoesNotExist:
            self.fail("does_not_exist", value=data)

    def to_representation(self, value) -> str:
        return value.path


class ChannelGrantSerializer(serializers.ModelSerializer):
    """A group's level on a channel and its subchannels; the group is named."""

    group = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all())

    class Meta:
        model = ChannelGrant
        fields = ["group", "level"]


class VerificationProblemSerializer(serializers.ModelSerializer):
    """A stored file verification found damaged, and what was done; open while
    `resolved_at` is null."""

    channel = serializers.CharField(source="channel.path", read_only=True)
    open = serializers.BooleanField(source="is_open", read_only=True)

    class Meta:
        model = VerificationProblem
        fields = [
            "id",
            "channel",
            "mirror",
            "kind",
            "path",
            "problem",
            "action",
            "found_at",
            "resolved_at",
            "open",
        ]
        read_only_fields = fields

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from psm.permissions import require

from .. import services
from ..models import Channel
from .serializers import ChannelSerializer

NAME_REGEX = r"[a-z0-9][a-z0-9_-]*"


class _ChannelActions(viewsets.ModelViewSet):
    serializer_class = ChannelSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_REGEX

    @extend_schema(request=None)
    @action(
        detail=True, methods=["post"], permission_classes=[require("channels_app.freeze_channel")]
    )
    def freeze(self, request, **kwargs):
        """Pin the channel's published index; clients keep seeing it until unfrozen."""
        channel = self.get_object()
        services.channel_freeze(channel=channel, user=request.user)
        return Response(self.get_serializer(channel).data)

    @extend_schema(request=None)
    @action(
        detail=True, methods=["post"], permission_classes=[require("channels_app.freeze_channel")]
    )
    def unfreeze(self, request, **kwargs):
        """Let the channel publish again."""
        channel = self.get_object()
        services.channel_unfreeze(channel=channel, user=request.user)
        return Response(self.get_serializer(channel).data)


class ChannelViewSet(_ChannelActions):
    """Top-level channels, addressed by name."""

    def get_queryset(self):
        return (
            Channel.objects.top_level().select_related("frozen_by").prefetch_related("subchannels")
        )


class SubchannelViewSet(_ChannelActions):
    """Subchannels of one channel: /api/channels/{parent}/subchannels/{name}/."""

    def get_parent(self) -> Channel:
        if not hasattr(self, "_parent"):
            self._parent = get_object_or_404(
                Channel.objects.top_level(), name=self.kwargs["parent_name"]
            )
        return self._parent

    def get_queryset(self):
        return Channel.objects.filter(parent=self.get_parent()).select_related(
            "parent", "frozen_by"
        )

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if "parent_name" in self.kwargs and not getattr(self, "swagger_fake_view", False):
            context["parent"] = self.get_parent()
        return context

    def create(self, request, *args, **kwargs):
        self.get_parent()  # 404 for an unknown parent before validating the body
        return super().create(request, *args, **kwargs)

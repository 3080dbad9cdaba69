from __future__ import annotations

from django.db.models import Prefetch, Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response

from psm.permissions import RowPermissions, RowPermissionsMixin, require

from .. import services, verification
from ..models import Channel
from ..permissions import GRANT, filter_allowed, known_channels, may
from .serializers import (
    ChannelGrantSerializer,
    ChannelSerializer,
    VerificationProblemSerializer,
)

NAME_REGEX = r"[a-z0-9][a-z0-9_-]*"


class GrantPermissions(RowPermissions):
    """Reading a channel's grants needs seeing it; replacing them, Manage on its category."""

    def actions_for(self, request) -> tuple[str, ...]:
        return ("view",) if request.method in SAFE_METHODS else (GRANT,)


class _ChannelActions(RowPermissionsMixin, viewsets.ModelViewSet):
    serializer_class = ChannelSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_REGEX
    permission_model = Channel

    def perform_create(self, serializer) -> None:
        # A Write grant allows subchannels in its own channel only: check the row itself.
        row = Channel(parent=serializer.validated_data.get("parent"))
        if not may(self.request.user, "add", row):
            raise PermissionDenied("You may not create channels here.")
        channel = Channel(**serializer.validated_data)
        serializer.instance = services.channel_create(channel=channel, user=self.request.user)

    def perform_update(self, serializer) -> None:
        channel = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(channel, name, value)
        services.channel_update(channel=channel, user=self.request.user)

    def perform_destroy(self, instance) -> None:
        services.channel_delete(channel=instance, user=self.request.user)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=[require("freeze")])
    def freeze(self, request, **kwargs):
        """Pin the channel's published index; clients keep seeing it until unfrozen."""
        channel = self.get_object()
        services.channel_freeze(channel=channel, user=request.user)
        return Response(self.get_serializer(channel).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=[require("freeze")])
    def unfreeze(self, request, **kwargs):
        """Let the channel publish again."""
        channel = self.get_object()
        services.channel_unfreeze(channel=channel, user=request.user)
        return Response(self.get_serializer(channel).data)

    @extend_schema(
        request=ChannelGrantSerializer(many=True), responses=ChannelGrantSerializer(many=True)
    )
    @action(
        detail=True,
        methods=["get", "put"],
        permission_classes=[GrantPermissions],
        serializer_class=ChannelGrantSerializer,
    )
    def grants(self, request, **kwargs):
        """The groups that read, write or manage this channel and its subchannels; PUT
        replaces them all (an empty list removes every grant)."""
        channel = self.get_object()
        if request.method == "PUT":
            given = ChannelGrantSerializer(data=request.data, many=True)
            given.is_valid(raise_exception=True)
            pairs = [(g["group"], g["level"]) for g in given.validated_data]
            try:
                services.channel_grants_set(channel=channel, grants=pairs, user=request.user)
            except ValueError as exc:
                raise serializers.ValidationError({"group": [str(exc)]}) from None
        grants = channel.grants.select_related("group")
        return Response(ChannelGrantSerializer(grants, many=True).data)

    @extend_schema(responses=VerificationProblemSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=VerificationProblemSerializer)
    def verification(self, request, **kwargs):
        """What verification found in this channel's stored files and index files, open
        problems first, then the most recent (paginated)."""
        rows = verification.problems_of(channel=self.get_object())
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(VerificationProblemSerializer(page, many=True).data)


class ChannelViewSet(_ChannelActions):
    """Top-level channels, addressed by name (Channels permissions)."""

    permission_subchannel = False

    def get_queryset(self):
        # Only the subchannels the user may see are named (Subchannels: Read).
        user = self.request.user
        subchannels = filter_allowed(user, "view", Channel.objects.filter(parent__isnull=False))
        channels = Channel.objects.top_level().select_related("frozen_by")
        return self.filter_rows(channels).prefetch_related(
            Prefetch("subchannels", queryset=subchannels)
        )


class SubchannelViewSet(_ChannelActions):
    """Subchannels of one channel: /api/channels/{parent}/subchannels/{name}/ (Subchannels
    permissions; the parent is only addressed, so Read on channels is not needed, but it must
    exist for the user: a private parent one may not read is a 404, as a missing one)."""

    permission_subchannel = True

    def get_parent(self) -> Channel:
        if not hasattr(self, "_parent"):
            user = self.request.user
            known = known_channels(user)
            if self.action != "create":
                # A subchannel one may see names its parent in its own path already.
                seen = filter_allowed(user, "view", Channel.objects.filter(parent__isnull=False))
                known |= Q(pk__in=seen.values("parent_id"))
            self._parent = get_object_or_404(
                Channel.objects.top_level().filter(known), name=self.kwargs["parent_name"]
            )
        return self._parent

    def get_queryset(self):
        subchannels = Channel.objects.filter(parent=self.get_parent())
        return self.filter_rows(subchannels).select_related("parent", "frozen_by")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if "parent_name" in self.kwargs and not getattr(self, "swagger_fake_view", False):
            context["parent"] = self.get_parent()
        return context

    def create(self, request, *args, **kwargs):
        self.get_parent()  # 404 for an unknown parent before validating the body
        return super().create(request, *args, **kwargs)

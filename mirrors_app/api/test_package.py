""" "Test a package" on the API: GET /api/channels/{path}/test-package/?name=&version=&platform=.

Declared here, not in channels_app, because the deciders are the mirrors' (channels_app
imports neither other app); psm/api_urls.py puts it under the channel routes."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from channels_app.models import Channel
from channels_app.permissions import filter_allowed, may_some

from ..package_test import package_test, question_problems


class RuleOutcomeSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="The rule kind (platform, cve-score, block, ...).")
    outcome = serializers.CharField(help_text="What the rule decided of the file.")
    detail = serializers.CharField(allow_blank=True, help_text="Why (the advisory, the spec).")


class TestedFileSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="unit/filename")
    known = serializers.BooleanField(
        help_text="Stored in PSM (else a hypothetical file of that name and version)."
    )
    allowed = serializers.BooleanField(help_text="Whether the file may enter the channel.")
    reason = serializers.CharField(allow_blank=True, help_text="Why it is kept out.")
    waived = serializers.CharField(allow_blank=True, help_text="The waiver that lets it in.")
    would_block = serializers.CharField(
        allow_blank=True, help_text="What a dry-run policy would block it for."
    )
    rules = RuleOutcomeSerializer(many=True)


class TestedMirrorSerializer(serializers.Serializer):
    mirror = serializers.CharField(allow_null=True, help_text="None: the channel's policy.")
    policy = serializers.CharField(allow_null=True, help_text="The policy deciding; None: none.")
    mode = serializers.CharField(allow_null=True, help_text="enforce or dry_run.")
    files = TestedFileSerializer(many=True)


class PackageTestSerializer(serializers.Serializer):
    channel = serializers.CharField()
    name = serializers.CharField()
    version = serializers.CharField(allow_blank=True)
    platform = serializers.CharField(allow_blank=True)
    results = TestedMirrorSerializer(many=True)


class SeesSomeChannel(BasePermission):
    """Signed in and allowed to see some channel (the channel itself is checked on lookup)."""

    def has_permission(self, request, view) -> bool:
        return may_some(request.user, "view")


class ChannelTestPackageView(APIView):
    """Ask the channel's deciders about a package, whether or not upstream has it yet: for
    each mirror (or the channel's own policy), each file's decision with every rule's outcome.
    Needs Read on the channel."""

    permission_classes = [SeesSomeChannel]

    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, required=True, description="The package name."),
            OpenApiParameter("version", str, description="A version, stored or not."),
            OpenApiParameter("platform", str, description="conda only: a subdir (linux-64)."),
        ],
        responses={
            200: PackageTestSerializer,
            400: OpenApiResponse(description="No name, or a bad version or platform."),
        },
    )
    def get(self, request, path: str = "", parent_name: str = "", name: str = ""):
        channel = self._channel(request, f"{parent_name}/{name}" if parent_name else path)
        params = request.query_params
        question = {key: params.get(key, "").strip() for key in ("name", "version", "platform")}
        problems = question_problems(channel, **question)
        if problems:
            raise ValidationError({key: [text] for key, text in problems.items()})
        return Response(PackageTestSerializer(package_test(channel, **question)).data)

    def _channel(self, request, path: str) -> Channel:
        """The channel, if the user may see it: else a 404, exactly as for a missing one."""
        channels = filter_allowed(request.user, "view", Channel.objects.select_related("parent"))
        try:
            return channels.get_by_path(path)
        except Channel.DoesNotExist:
            raise Http404 from None

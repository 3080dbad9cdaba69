"""REST API of the access pieces: `/api/tokens/` (your API tokens) and `/api/audit/`."""

from __future__ import annotations

from django.db.models import Prefetch
from django.utils.cache import patch_cache_control
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.response import Response

from channels_app.api.serializers import ChannelPathField
from channels_app.permissions import known_channels

from . import tokens
from .models import ApiToken, AuditEvent, TokenResource
from .roles import parse_grant


class TokenResourceSerializer(serializers.Serializer):
    # Only channels the user may read: a hidden channel "does not exist", as a missing one.
    channel = ChannelPathField()
    level = serializers.ChoiceField(choices=TokenResource.Level.choices, default="read")


class TokenSerializer(serializers.ModelSerializer):
    resources = TokenResourceSerializer(many=True, required=False)
    scopes = serializers.ListField(child=serializers.CharField(), required=False)
    token = serializers.SerializerMethodField(
        help_text="The secret: returned once, when the token is created."
    )

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "description",
            "kind",
            "scopes",
            "resources",
            "expires_at",
            "hint",
            "token",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = ["hint", "created_at", "last_used_at", "revoked_at"]

    def get_token(self, token: ApiToken) -> str | None:
        return getattr(token, "secret", None)

    def validate_scopes(self, scopes: list[str]) -> list[str]:
        for scope in scopes:
            try:
                parse_grant(scope)
            except ValueError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return scopes

    def validate(self, attrs):
        resources = [(r["channel"], r["level"]) for r in attrs.get("resources", [])]
        try:
            tokens.token_check(
                kind=attrs.get("kind", ApiToken.Kind.RESOURCE),
                scopes=attrs.get("scopes", []),
                resources=resources,
            )
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return attrs


class _NotThroughAToken(permissions.IsAuthenticated):
    """Tokens are managed by a signed-in user, never by another PSM token (no escalation)."""

    message = "Manage tokens with a session or a single sign-on token, not with a PSM token."

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and not isinstance(request.auth, ApiToken)


class TokenViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your API tokens. POST creates one and returns its secret once; DELETE revokes it."""

    serializer_class = TokenSerializer
    permission_classes = [_NotThroughAToken]

    def get_authenticators(self):
        # Besides the API's own: a password, for creating a token (tokens.PasswordAuthentication).
        return [*super().get_authenticators(), tokens.PasswordAuthentication()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ApiToken.objects.none()
        # A token may still name a channel its owner can no longer read: not shown.
        resources = TokenResource.objects.filter(
            known_channels(self.request.user, "channel")
        ).select_related("channel__parent")
        return ApiToken.objects.filter(user=self.request.user).prefetch_related(
            Prefetch("resources", queryset=resources)
        )

    def create(self, request, *args, **kwargs):
        response = super().create(request, *args, **kwargs)
        patch_cache_control(response, no_store=True)  # the body carries the secret, once
        return response

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        resources = [(r["channel"], r["level"]) for r in data.pop("resources", [])]
        token, secret = tokens.token_create(user=self.request.user, resources=resources, **data)
        token.secret = secret
        serializer.instance = token

    def destroy(self, request, *args, **kwargs):
        token = self.get_object()
        tokens.token_revoke(token=token, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor_name",
            "action",
            "target_type",
            "target_id",
            "target_name",
            "details",
        ]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first (Read on Audit logs)."""

    serializer_class = AuditEventSerializer

    def get_queryset(self):
        events = AuditEvent.objects.all()
        params = self.request.query_params
        for param, field in (
            ("action", "action"),
            ("actor", "actor_name"),
            ("target_type", "target_type"),
        ):
            if params.get(param):
                events = events.filter(**{field: params[param]})
        return events

    @extend_schema(
        parameters=[
            OpenApiParameter("action", str, description="e.g. mirror.stop, policy.change"),
            OpenApiParameter("actor", str, description="A user name."),
            OpenApiParameter("target_type", str, description="mirror, channel, policy, apitoken"),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

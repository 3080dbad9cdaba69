from __future__ import annotations

from django.db.models import ProtectedError, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from packaging.utils import canonicalize_name
from rest_framework import status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from .. import services
from ..models import CveStatus, NameMapping, Policy, Vulnerability, Waiver
from .serializers import (
    NameMappingSerializer,
    PolicySerializer,
    VulnerabilitySerializer,
    WaiverSerializer,
)


class PolicyViewSet(viewsets.ModelViewSet):
    queryset = Policy.objects.all()
    serializer_class = PolicySerializer
    search_fields = ["name"]

    def perform_create(self, serializer) -> None:
        policy = Policy(**serializer.validated_data)
        serializer.instance = services.policy_save(policy=policy, user=self.request.user)

    def perform_update(self, serializer) -> None:
        policy = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(policy, name, value)
        services.policy_save(policy=policy, user=self.request.user)

    def destroy(self, request, *args, **kwargs):
        policy = self.get_object()
        try:
            services.policy_delete(policy=policy, user=request.user)
        except ProtectedError:
            return Response(
                {
                    "detail": f"Policy {policy.name!r} is applied to a channel or mirror; "
                    "remove it from them first."
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


class VulnerabilityViewSet(viewsets.ReadOnlyModelViewSet):
    """Advisories (OSV) that CVE rules of policies use; loaded from OSV data, read-only here."""

    queryset = Vulnerability.objects.all()
    serializer_class = VulnerabilitySerializer

    def get_queryset(self):
        found = super().get_queryset()
        params = self.request.query_params
        status_ = params.get("status")
        if status_:
            if status_ not in CveStatus.values:
                raise ValidationError({"status": [f"One of: {', '.join(CveStatus.values)}."]})
            found = found.filter(status=status_)
        package = params.get("package", "").strip()
        if package:
            found = found.affecting(package)
        search = params.get("search", "").strip()
        if search:
            found = found.filter(Q(osv_id__icontains=search) | Q(aliases__icontains=search))
        return found

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=CveStatus.values, description="Only this status."),
            OpenApiParameter("package", str, description="Only advisories affecting this package."),
            OpenApiParameter("search", str, description="Part of an id or alias (e.g. a CVE id)."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class WaiverViewSet(viewsets.ModelViewSet):
    """Exceptions to policy rules; the creator is the requesting user. Creating, changing or
    deleting one decides the policy's mirrors again."""

    queryset = Waiver.objects.select_related("policy")
    serializer_class = WaiverSerializer

    def get_queryset(self):
        found = super().get_queryset()
        params = self.request.query_params
        policy = params.get("policy")
        if policy is not None:
            if not policy.isdigit():
                raise ValidationError({"policy": ["Give a policy id."]})
            found = found.filter(policy_id=int(policy))
        active = params.get("active")
        if active is not None:
            if active not in ("true", "false"):
                raise ValidationError({"active": ["Give true or false."]})
            now = timezone.now()
            found = (
                found.filter(expires_at__gt=now)
                if active == "true"
                else found.filter(expires_at__lte=now)
            )
        return found

    @extend_schema(
        parameters=[
            OpenApiParameter("policy", int, description="Only the waivers of this policy."),
            OpenApiParameter("active", bool, description="Only active (or expired) waivers."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer) -> None:
        waiver = Waiver(**serializer.validated_data)
        serializer.instance = services.waiver_save(waiver=waiver, user=self.request.user)

    def perform_update(self, serializer) -> None:
        waiver = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(waiver, name, value)
        services.waiver_save(waiver=waiver, user=self.request.user)

    def perform_destroy(self, instance: Waiver) -> None:
        services.waiver_delete(waiver=instance, user=self.request.user)


class NameMappingViewSet(viewsets.ReadOnlyModelViewSet):
    """The conda → PyPI name mapping (loaded from a file: `load_name_mapping`), read-only."""

    queryset = NameMapping.objects.all()
    serializer_class = NameMappingSerializer

    def get_queryset(self):
        found = super().get_queryset()
        params = self.request.query_params
        conda_name = params.get("conda_name", "").strip()
        if conda_name:
            found = found.filter(conda_name=conda_name.lower())
        name = params.get("name", "").strip()
        if name:
            found = found.filter(name=canonicalize_name(name))
        return found

    @extend_schema(
        parameters=[
            OpenApiParameter("conda_name", str, description="Only this conda package."),
            OpenApiParameter("name", str, description="Only this PyPI project."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

from __future__ import annotations

from django.db.models import ProtectedError, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from .. import services
from ..models import CveStatus, Policy, Vulnerability
from .serializers import PolicySerializer, VulnerabilitySerializer


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
            found = found.filter(
                Q(affected__contains=[{"name": package}])
                | Q(affected__contains=[{"name": package.lower()}])
            )
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

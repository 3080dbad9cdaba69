from __future__ import annotations

from django.db.models import ProtectedError
from rest_framework import status, viewsets
from rest_framework.response import Response

from ..models import Policy
from .serializers import PolicySerializer


class PolicyViewSet(viewsets.ModelViewSet):
    queryset = Policy.objects.all()
    serializer_class = PolicySerializer
    search_fields = ["name"]

    def destroy(self, request, *args, **kwargs):
        policy = self.get_object()
        try:
            policy.delete()
        except ProtectedError:
            return Response(
                {
                    "detail": f"Policy {policy.name!r} is applied to a channel or mirror; "
                    "remove it from them first."
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from psm.permissions import require

from .. import reports, services
from ..models import Mirror, SyncRun
from .serializers import MirrorDetailsSerializer, MirrorSerializer, SyncRunSerializer


class MirrorViewSet(viewsets.ModelViewSet):
    """Mirrors, by id. Listing every mirror needs the 'view all mirrors' permission;
    without it, filter by `?channel=<channel or channel/sub>`."""

    serializer_class = MirrorSerializer

    def get_queryset(self):
        mirrors = Mirror.objects.with_related().prefetch_related(
            Prefetch("runs", queryset=SyncRun.objects.active(), to_attr="_active_runs")
        )
        channel = self.request.query_params.get("channel")
        if channel:
            parent, _, sub = channel.strip("/").partition("/")
            if sub:
                return mirrors.filter(channel__parent__name=parent, channel__name=sub)
            return mirrors.filter(channel__parent__isnull=True, channel__name=parent)
        if self.action == "list" and not self.request.user.has_perm("mirrors_app.view_all_mirrors"):
            raise PermissionDenied(
                "Listing all mirrors needs the 'view all mirrors' permission; "
                "filter by ?channel= to list one channel's mirrors."
            )
        return mirrors

    @extend_schema(parameters=[OpenApiParameter("channel", str, description="channel or ch/sub")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer) -> None:
        self._save(serializer)

    def perform_update(self, serializer) -> None:
        self._save(serializer)

    def _save(self, serializer) -> None:
        data = dict(serializer.validated_data)
        run_now = data.pop("run_now", False)
        mirror = serializer.instance or Mirror()
        for name, value in data.items():
            setattr(mirror, name, value)
        try:
            run = services.mirror_save(mirror=mirror, user=self.request.user, run_now=run_now)
        except services.MirrorBusy:
            pass  # saved; the run already in progress will pick up the new settings next time
        else:
            if run is not None:
                mirror._active_runs = [run]  # the prefetched active runs predate this run
        serializer.instance = mirror

    def perform_destroy(self, instance: Mirror) -> None:
        with_packages = self.request.query_params.get("with_packages") in ("1", "true")
        services.mirror_delete(mirror=instance, with_packages=with_packages)

    def _command(self, request, service) -> Response:
        mirror = self.get_object()
        try:
            run = service(mirror=mirror, user=request.user)
        except (services.MirrorBusy, services.MirrorNotRunning) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[require("mirrors_app.run_mirror")])
    def run(self, request, pk=None):
        """Queue a run now (409 if one is already in progress)."""
        return self._command(request, services.mirror_run_now)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[require("mirrors_app.stop_mirror")])
    def stop(self, request, pk=None):
        """Ask the running run to stop: status Stopping, then Stopped; progress is kept."""
        return self._command(request, services.mirror_stop)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(
        detail=True, methods=["post"], permission_classes=[require("mirrors_app.restart_mirror")]
    )
    def restart(self, request, pk=None):
        """Queue a run from the beginning (409 if one is in progress: stop it first)."""
        return self._command(request, services.mirror_restart)

    @extend_schema(responses=MirrorDetailsSerializer)
    @action(detail=True, methods=["get"])
    def details(self, request, pk=None):
        """See details: what was filtered and why, active vs passive package counts."""
        details = reports.mirror_details(self.get_object())
        return Response(
            MirrorDetailsSerializer(details, context=self.get_serializer_context()).data
        )


class SyncRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs of mirrors, newest first; filter with `?mirror=<id>`."""

    serializer_class = SyncRunSerializer

    def get_queryset(self):
        runs = SyncRun.objects.select_related("requested_by")
        mirror = self.request.query_params.get("mirror")
        if mirror:
            if not mirror.isdigit():
                raise ValidationError({"mirror": "Give a mirror id."})
            runs = runs.filter(mirror_id=int(mirror))
        return runs

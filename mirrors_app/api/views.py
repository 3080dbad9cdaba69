from __future__ import annotations

from collections.abc import Iterable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from channels_app import verification
from channels_app.api.serializers import VerificationProblemSerializer
from psm.permissions import RowPermissionsMixin, require

from .. import reports, services
from ..models import Mirror, SyncRun
from ..permissions import filter_allowed, may
from .serializers import (
    DependencyReportRowSerializer,
    ExcludedPackageSerializer,
    ExplanationSerializer,
    MirrorDetailsSerializer,
    MirrorFileSerializer,
    MirrorSerializer,
    PolicyChangeSerializer,
    PolicyEnforcementSerializer,
    SyncRunSerializer,
)


class CSVRenderer(BaseRenderer):
    """text/csv, chosen by `?format=csv` or `Accept: text/csv`. Views hand it the CSV text;
    an error (a dict such as {"detail": ...}) becomes a one-row CSV of its fields."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        if isinstance(data, str):
            return data.encode()
        if isinstance(data, dict):
            return reports.as_csv([{k: str(v) for k, v in data.items()}], data).encode()
        return str(data).encode()


CSV_RENDERERS = [JSONRenderer, CSVRenderer]


def _csv_response(
    request, mirror: Mirror, report: str, rows: list[dict], columns: Iterable[str]
) -> Response | None:
    """The mirror's report as a CSV download when the client asked for CSV, else None."""
    if getattr(request.accepted_renderer, "format", None) != "csv":
        return None
    response = Response(reports.as_csv(rows, columns))
    filename = reports.report_filename(mirror, report)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class MirrorViewSet(RowPermissionsMixin, viewsets.ModelViewSet):
    """Mirrors, by id. Listing every mirror needs the 'view all mirrors' permission;
    without it, filter by `?channel=<channel or channel/sub>`. Mirrors of subchannels need
    the Subchannel mirrors permissions, the others the Channel mirrors ones."""

    serializer_class = MirrorSerializer
    permission_model = Mirror

    def get_queryset(self):
        mirrors = self.filter_rows(Mirror.objects.with_related()).with_active_runs()
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
        # Checked on the mirror as saved: its channel decides which permission applies.
        action = "change" if mirror.pk else "add"
        if not may(self.request.user, action, mirror):
            raise PermissionDenied(
                f"You may not {action} mirrors in {'sub' if mirror.channel.parent_id else ''}"
                "channels."
            )
        try:
            run = services.mirror_save(mirror=mirror, user=self.request.user, run_now=run_now)
        except services.MirrorBusy:
            pass  # saved; the run already in progress will pick up the new settings next time
        else:
            if run is not None:
                mirror._active_runs = [run]  # the prefetched active runs predate this run
        # Saved either way: what the check finds is told in the answer's warnings.
        mirror.source_problems = services.mirror_check_source(mirror=mirror)
        serializer.instance = mirror

    def perform_destroy(self, instance: Mirror) -> None:
        with_packages = self.request.query_params.get("with_packages") in ("1", "true")
        services.mirror_delete(mirror=instance, with_packages=with_packages, user=self.request.user)

    def _command(self, request, service) -> Response:
        mirror = self.get_object()
        try:
            run = service(mirror=mirror, user=request.user)
        except (services.MirrorBusy, services.MirrorNotRunning) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[require("run")])
    def run(self, request, pk=None):
        """Queue a run now (409 if one is already in progress)."""
        return self._command(request, services.mirror_run_now)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[require("stop")])
    def stop(self, request, pk=None):
        """Ask the running run to stop: status Stopping, then Stopped; progress is kept."""
        return self._command(request, services.mirror_stop)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[require("restart")])
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

    @extend_schema(responses=VerificationProblemSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=VerificationProblemSerializer)
    def verification(self, request, pk=None):
        """What verification found in this mirror's stored files and its channel's index
        files, open problems first, then the most recent (paginated)."""
        rows = verification.problems_of(mirror=self.get_object())
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(VerificationProblemSerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "state",
                str,
                required=True,
                enum=[*reports.FILE_LISTS],
                description="Which files: a state, or would_block (the dry-run figure).",
            )
        ],
        responses={200: MirrorFileSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def files(self, request, pk=None):
        """The mirror's files in one state, paginated: the list behind each count of
        `details` (`count` equals it)."""
        mirror = self.get_object()
        state = request.query_params.get("state", "")
        if state not in reports.FILE_LISTS:
            raise ValidationError({"state": [f"Choose one of: {', '.join(reports.FILE_LISTS)}."]})
        page = self.paginate_queryset(reports.mirror_files(mirror, state))
        return self.get_paginated_response(MirrorFileSerializer(page, many=True).data)

    @extend_schema(responses={200: PolicyEnforcementSerializer(many=True)})
    @action(detail=True, methods=["get"], serializer_class=PolicyEnforcementSerializer)
    def enforcements(self, request, pk=None):
        """The mirror's policy enforcements, newest first (paginated): after an advisory load,
        a policy, waiver or assignment change, a waiver's expiry or a cooldown's end, which
        files left, entered or (dry run) would leave, and why."""
        rows = self.get_object().enforcements.order_by("-at", "-pk")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(PolicyEnforcementSerializer(page, many=True).data)

    @extend_schema(
        responses={
            (200, "application/json"): ExcludedPackageSerializer(many=True),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="CSV with the header path,name,version,reason."
            ),
        }
    )
    @action(detail=True, methods=["get"], renderer_classes=CSV_RENDERERS, pagination_class=None)
    def excluded(self, request, pk=None):
        """Every file of the mirror kept out (by a filter, the policy, or as an unsafe or
        invalid entry), with the reason (all of them, not paginated); `?format=csv` or `Accept: text/csv` for a CSV file."""
        mirror = self.get_object()
        rows = reports.excluded_packages(mirror)
        csv = _csv_response(request, mirror, "excluded", rows, reports.EXCLUDED_COLUMNS)
        return csv or Response(ExcludedPackageSerializer(rows, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "package",
                str,
                required=True,
                description="A package name (e.g. numpy) or a file name (e.g. "
                "numpy-2.0.0-py312h0_0.conda).",
            )
        ],
        responses={
            200: ExplanationSerializer(many=True),
            400: OpenApiResponse(description="No `package` given."),
        },
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def explain(self, request, pk=None):
        """Why is X missing? Each file of the mirror with that name: in or out, and why.
        An empty list: the mirror's source has no such package."""
        mirror = self.get_object()
        package = request.query_params.get("package", "").strip()
        if not package:
            raise ValidationError({"package": ["Give a package name or a file name."]})
        rows = reports.explain(mirror, package)
        return Response(ExplanationSerializer(rows, many=True).data)

    @extend_schema(
        responses={
            (200, "application/json"): DependencyReportRowSerializer(many=True),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="CSV with the header " + ",".join(reports.REPORT_COLUMNS) + ".",
            ),
            404: OpenApiResponse(description="The mirror has no dependency report, and why."),
        }
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="dependency-report",
        renderer_classes=CSV_RENDERERS,
        pagination_class=None,
        permission_classes=[require("view", "report")],
    )
    def dependency_report(self, request, pk=None):
        """The packages the policy allows by name with their dependencies, and whether each is
        present, filtered or missing; `?format=csv` or `Accept: text/csv` for a CSV file.
        404 when the mirror has none (its policy allows no packages by name with 'Include
        dependencies' set)."""
        mirror = self.get_object()
        rows = reports.dependency_report(mirror)
        if rows is None:
            return Response(
                {"detail": reports.dependency_report_unavailable(mirror)},
                status=status.HTTP_404_NOT_FOUND,
            )
        csv = _csv_response(request, mirror, "dependency-report", rows, reports.REPORT_COLUMNS)
        return csv or Response(DependencyReportRowSerializer(rows, many=True).data)

    @extend_schema(request=None, responses=PolicyChangeSerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path="policy-preview",
        permission_classes=[require("view", "change")],
    )
    def policy_preview(self, request, pk=None):
        """What applying the effective policy now would change among the packages the mirror
        holds: nothing is changed."""
        change = services.mirror_policy_apply(mirror=self.get_object(), dry_run=True)
        return Response(PolicyChangeSerializer(change).data)

    @extend_schema(request=None, responses=PolicyChangeSerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path="policy-apply",
        permission_classes=[require("view", "change")],
    )
    def policy_apply(self, request, pk=None):
        """Apply the effective policy to the packages the mirror holds now, without fetching
        the source again, and republish the channel (409 while a run is active)."""
        try:
            change = services.mirror_policy_apply(mirror=self.get_object(), user=request.user)
        except services.MirrorBusy as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(PolicyChangeSerializer(change).data)


class SyncRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs of mirrors, newest first; filter with `?mirror=<id>`. Only runs of the mirrors
    the user may see are listed."""

    serializer_class = SyncRunSerializer

    def get_queryset(self):
        runs = filter_allowed(
            self.request.user, "view", SyncRun.objects.select_related("requested_by")
        )
        mirror = self.request.query_params.get("mirror")
        if mirror:
            if not mirror.isdigit():
                raise ValidationError({"mirror": "Give a mirror id."})
            runs = runs.filter(mirror_id=int(mirror))
        return runs

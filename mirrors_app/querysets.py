from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import BooleanField, ExpressionWrapper, OuterRef, Prefetch, Q, Subquery


class MirrorQuerySet(models.QuerySet):
    def with_related(self) -> MirrorQuerySet:
        return self.select_related("channel", "channel__parent", "policy", "channel__policy")

    def with_active_runs(self) -> MirrorQuerySet:
        """Prefetch each mirror's active runs, which `Mirror.active_run` reads."""
        from .models import SyncRun

        active = Prefetch("runs", queryset=SyncRun.objects.active(), to_attr="_active_runs")
        return self.prefetch_related(active)

    def with_run_warnings(self) -> MirrorQuerySet:
        """Annotate `run_warned`: whether the latest run (skipped ones aside) has warnings."""
        from .models import SyncRun

        latest = (
            SyncRun.objects.filter(mirror=OuterRef("pk"))
            .exclude(state=SyncRun.State.SKIPPED)
            .order_by("-created_at")
            .annotate(warned=ExpressionWrapper(~Q(warnings=""), output_field=BooleanField()))
        )
        return self.annotate(
            run_warned=Subquery(latest.values("warned")[:1], output_field=BooleanField())
        )


class SyncRunQuerySet(models.QuerySet):
    def active(self) -> SyncRunQuerySet:
        return self.filter(state__in=self.model.ACTIVE_STATES)

    def stale(self, *, heartbeat_before: datetime) -> SyncRunQuerySet:
        """Running or stopping runs whose worker has not reported since the cut-off."""
        return self.filter(
            state__in=[self.model.State.RUNNING, self.model.State.STOPPING],
            heartbeat_at__lt=heartbeat_before,
        )

    def waiting_since(self, before: datetime) -> SyncRunQuerySet:
        """Queued runs whose task was last sent before the cut-off (`heartbeat_at` of a queued
        run: when its message was re-sent, if ever)."""
        return self.filter(state=self.model.State.QUEUED).filter(
            Q(heartbeat_at__lt=before) | Q(heartbeat_at__isnull=True, created_at__lt=before)
        )

from __future__ import annotations

from datetime import datetime

from django.db import models


class MirrorQuerySet(models.QuerySet):
    def in_channel(self, channel) -> MirrorQuerySet:
        return self.filter(channel=channel)

    def with_related(self) -> MirrorQuerySet:
        return self.select_related("channel", "channel__parent", "policy", "channel__policy")


class SyncRunQuerySet(models.QuerySet):
    def active(self) -> SyncRunQuerySet:
        return self.filter(state__in=self.model.ACTIVE_STATES)

    def stale(self, *, heartbeat_before: datetime) -> SyncRunQuerySet:
        """Running or stopping runs whose worker has not reported since the cut-off."""
        return self.filter(
            state__in=[self.model.State.RUNNING, self.model.State.STOPPING],
            heartbeat_at__lt=heartbeat_before,
        )

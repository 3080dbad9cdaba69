from __future__ import annotations

from django.db import models


class ChannelQuerySet(models.QuerySet):
    def top_level(self) -> ChannelQuerySet:
        return self.filter(parent__isnull=True)

    def get_by_path(self, path: str):
        """Return the channel addressed as `channel` or `channel/subchannel`."""
        parent, _, sub = path.strip("/").partition("/")
        if sub:
            return self.get(parent__parent__isnull=True, parent__name=parent, name=sub)
        return self.get(parent__isnull=True, name=parent)

from __future__ import annotations

from django.db import models


class ChannelQuerySet(models.QuerySet):
    def top_level(self) -> ChannelQuerySet:
        return self.filter(parent__isnull=True)

    def with_mirror_count(self) -> ChannelQuerySet:
        """Annotate `_mirror_count`: the channel's own mirrors (not its subchannels')."""
        return self.annotate(_mirror_count=models.Count("mirrors"))

    def get_by_path(self, path: str):
        """Return the channel addressed as `channel` or `channel/subchannel`."""
        parent, _, sub = path.strip("/").partition("/")
        if sub:
            return self.get(parent__parent__isnull=True, parent__name=parent, name=sub)
        return self.get(parent__isnull=True, name=parent)

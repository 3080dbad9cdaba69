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


def has_rows(rows: models.QuerySet, *index: str) -> bool:
    """Whether `rows` holds a row, asked along the index whose leading columns are `index`.

    `exists()` leaves PostgreSQL free to scan the table from its start for the first match,
    which reads every row stored before those asked for: a mirror whose rows were loaded
    after another mirror's 600,000 waited 66 ms for the answer, and one after several
    mirrors' would wait seconds. Ordered by the index's columns, the first match is a probe
    of the index."""
    return bool(list(rows.order_by(*index).values_list(index[0], flat=True)[:1]))

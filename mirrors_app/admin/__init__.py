"""The admin of mirrors (`mirrors`, with its form in `forms` and its own pages in `pages`)
and of their runs (`runs`)."""

from .mirrors import MirrorAdmin
from .runs import SyncRunAdmin

__all__ = ["MirrorAdmin", "SyncRunAdmin"]

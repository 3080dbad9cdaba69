"""The admin of runs: read-only, and only runs of the mirrors the user may see."""

from __future__ import annotations

from django.contrib import admin

from psm.redaction import refers_to_secret

from ..models import SyncRun
from ..permissions import filter_allowed


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "mirror",
        "state",
        "trigger",
        "created_at",
        "started_at",
        "finished_at",
        "seen",
        "filtered",
        "ingested",
        "downloaded",
        "failed",
    ]
    list_filter = ["state", "trigger"]
    search_fields = ["mirror__name"]
    list_select_related = ["mirror"]
    show_full_result_count = False

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return not refers_to_secret(lookup) and super().lookup_allowed(lookup, value, request)

    def get_queryset(self, request):
        # Only runs of the mirrors the user may see.
        return filter_allowed(request.user, "view", super().get_queryset(request))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

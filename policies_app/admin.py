from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from .models import Policy


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "channel_count", "mirror_count", "updated_at"]
    search_fields = ["name", "description"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _channels=Count("channels", distinct=True), _mirrors=Count("mirrors", distinct=True)
            )
        )

    @admin.display(description="Channels", ordering="_channels")
    def channel_count(self, policy: Policy) -> int:
        return policy._channels

    @admin.display(description="Mirrors", ordering="_mirrors")
    def mirror_count(self, policy: Policy) -> int:
        return policy._mirrors

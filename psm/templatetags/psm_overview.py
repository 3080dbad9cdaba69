"""The admin index's overview (psm/templates/admin/index.html)."""

from __future__ import annotations

from django import template

from psm.overview import overview

register = template.Library()


@register.inclusion_tag("admin/psm/overview.html", takes_context=True)
def psm_overview(context) -> dict:
    """The overview for the signed-in user of the page."""
    return {"overview": overview(context["request"].user)}

"""Filters of the live progress fragment (admin/mirrors_app/mirror/progress.html)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: "45 s", "3 min 5 s", "2 h 10 min"."""
    if seconds is None:
        return ""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def count(number: float | None) -> str:
    """A count with thousands separators (1,234)."""
    return "" if number is None else f"{round(number):,}"

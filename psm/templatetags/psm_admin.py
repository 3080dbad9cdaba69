"""Template tags of the admin's own templates."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template
from django.contrib import admin
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

register = template.Library()

#: The form field that carries where Cancel goes across a submit that fails validation.
CANCEL_FIELD = "_cancel_to"


@register.simple_tag(takes_context=True)
def cancel_url(context) -> str:
    """Where an add or change form's Cancel goes: the page the user came from (on this site),
    else the model's list if they may open it, else the admin index; never a page that would
    answer 403."""
    request, opts = context.get("request"), context.get("opts")
    if request is None or opts is None:
        return reverse("admin:index")
    here = request.path
    for candidate in (request.POST.get(CANCEL_FIELD), request.META.get("HTTP_REFERER")):
        if (
            candidate
            and url_has_allowed_host_and_scheme(
                candidate, {request.get_host()}, require_https=request.is_secure()
            )
            and not _same_page(candidate, here)
        ):
            return candidate
    model_admin = admin.site._registry.get(opts.model)
    if model_admin is not None:
        # get_model_perms is what the index shows: an admin hiding its list (All Mirrors without
        # its permission) answers False there too.
        perms = model_admin.get_model_perms(request)
        if perms.get("view") or perms.get("change"):
            return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return reverse("admin:index")


def _same_page(url: str, path: str) -> bool:
    """Whether `url` is the form's own page (a reload, or the referer of its own POST)."""
    return urlsplit(url).path == path

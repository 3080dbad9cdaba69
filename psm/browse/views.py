"""The package browser's pages: channels, a channel's packages, a package."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from channels_app.formats import FORMATS, kind_label
from channels_app.models import Channel
from channels_app.permissions import may_know

from . import queries
from .install import channel_urls, install_lines
from .why import explaining_mirrors, why_not_here

PACKAGES_PER_PAGE = 50
VERSIONS_PER_PAGE = 20
MAX_SEARCH = 255


def _has_platforms(kind: str) -> bool:
    """Whether the type's units are platforms (conda subdirs), worth a column of their own."""
    fmt = FORMATS.get(kind)
    return bool(fmt and fmt.capabilities.fixed_units)


def _token_url(request: HttpRequest) -> str:
    """Where the visitor makes an API token, if they may open that page ("" otherwise)."""
    user = request.user
    if user.is_active and user.is_staff:
        return reverse("admin:psm_apitoken_add")
    return ""


def _parent_shown(request: HttpRequest, channel: Channel) -> Channel | None:
    """The subchannel's parent, to link to, if the visitor may read it (a public subchannel
    of a private channel names its parent in its path, but its page stays closed)."""
    parent = channel.parent if channel.parent_id else None
    return parent if parent is not None and may_know(request.user, parent) else None


@require_safe
def channel_list(request: HttpRequest) -> HttpResponse:
    channels = list(queries.readable_channels(request.user))
    counts = queries.name_counts(channels)
    rows = [
        {"channel": c, "label": kind_label(c.kind), "packages": counts.get(c.pk, 0)}
        for c in channels
    ]
    return render(request, "browse/channels.html", {"rows": rows})


@require_safe
def channel_detail(request: HttpRequest, path: str) -> HttpResponse:
    channel = queries.readable_channel(request.user, path)
    search = request.GET.get("q", "").strip()[:MAX_SEARCH]
    page = queries.names_page(channel, search, request.GET.get("page"), PACKAGES_PER_PAGE)
    mirrors = explaining_mirrors(request.user, channel)
    why = request.GET.get("why", "").strip()
    context = {
        "channel": channel,
        "parent": _parent_shown(request, channel),
        "label": kind_label(channel.kind),
        "search": search,
        "page": page,
        "total": page.paginator.count,
        "summaries": queries.summaries(channel, list(page.object_list)),
        "platforms": _has_platforms(channel.kind),
        "subchannels": queries.readable_channels(request.user).filter(parent=channel),
        "can_explain": bool(mirrors),
        "why": why_not_here(channel, mirrors, why) if mirrors and why else None,
        "why_query": why,
        "staff": request.user.is_active and request.user.is_staff,
    }
    return render(request, "browse/channel.html", context)


@require_safe
def package_detail(request: HttpRequest, path: str, name: str) -> HttpResponse:
    channel = queries.readable_channel(request.user, path)
    versions = queries.package_versions(channel, name)
    if not versions:
        raise Http404("No such package in this channel.")
    page = Paginator(versions, VERSIONS_PER_PAGE).get_page(request.GET.get("page"))
    urls = channel_urls(request, channel)
    context = {
        "channel": channel,
        "parent": _parent_shown(request, channel),
        "label": kind_label(channel.kind),
        "name": name,
        "latest": versions[0],
        "count": len(versions),
        "page": page,
        "versions": queries.version_files(channel, name, list(page.object_list)),
        "totals": queries.package_totals(channel, name),
        "platforms": _has_platforms(channel.kind),
        "urls": urls,
        "lines": install_lines(urls, channel.kind, name),
        "token_url": _token_url(request) if urls.needs_token else "",
        "can_explain": bool(explaining_mirrors(request.user, channel)),
    }
    return render(request, "browse/package.html", context)

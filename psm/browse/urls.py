"""The package browser's URLs (included at the site's root by psm/urls.py)."""

from __future__ import annotations

from django.urls import path, re_path

from . import views

# `channel` or `channel/subchannel` (subchannels are one level deep).
CHANNEL = r"(?P<path>[a-z0-9][a-z0-9_-]*(?:/[a-z0-9][a-z0-9_-]*)?)"

app_name = "browse"
urlpatterns = [
    path("", views.channel_list, name="channels"),
    re_path(
        rf"^channels/{CHANNEL}/packages/(?P<name>[^/]+)/$", views.package_detail, name="package"
    ),
    re_path(rf"^channels/{CHANNEL}/$", views.channel_detail, name="channel"),
]

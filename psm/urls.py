from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from channels_app import serving

from . import schema  # noqa: F401 - registers the OpenAPI extensions the schema view uses

admin.site.site_header = "Package Security Manager"
admin.site.site_title = "PSM"
admin.site.index_title = "Channels, mirrors and policies"
# "View site": the package browser.
admin.site.site_url = "/"

urlpatterns = []
if settings.PSM_OIDC_ENABLED:
    from . import oidc

    urlpatterns += [
        # The admin's "Log out" also ends a single sign-on session at the provider.
        path("admin/logout/", oidc.admin_logout, name="psm_admin_logout"),
        path("oidc/", include("mozilla_django_oidc.urls")),
    ]
urlpatterns += [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # What package clients read: a channel's index and package files; private channels also
    # with a token in the path (conda's form).
    re_path(r"^api/repo/t/(?P<token>[^/]+)/(?P<path>.+)$", serving.repo_file, name="repo-token"),
    re_path(r"^api/repo/(?P<path>.+)$", serving.repo_file, name="repo-file"),
    path("api/", include("psm.api_urls")),
    # The package browser: the channels a visitor may read, their packages, install lines.
    path("", include("psm.browse.urls")),
]

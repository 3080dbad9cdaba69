"""The REST API under /api/: one router for every app's viewsets."""

from django.urls import re_path
from rest_framework.routers import DefaultRouter

from channels_app.api.views import ChannelViewSet, SubchannelViewSet
from mirrors_app.api.test_package import ChannelTestPackageView
from mirrors_app.api.views import MirrorViewSet, SyncRunViewSet
from policies_app.api.views import (
    NameMappingViewSet,
    PolicyViewSet,
    VulnerabilityViewSet,
    WaiverViewSet,
)
from psm.api_views import AuditEventViewSet, TokenViewSet

router = DefaultRouter()
router.register("channels", ChannelViewSet, basename="channel")
router.register(
    r"channels/(?P<parent_name>[a-z0-9][a-z0-9_-]*)/subchannels",
    SubchannelViewSet,
    basename="subchannel",
)
router.register("mirrors", MirrorViewSet, basename="mirror")
router.register("runs", SyncRunViewSet, basename="syncrun")
router.register("policies", PolicyViewSet, basename="policy")
router.register("vulnerabilities", VulnerabilityViewSet, basename="vulnerability")
router.register("waivers", WaiverViewSet, basename="waiver")
router.register("name-mappings", NameMappingViewSet, basename="namemapping")
router.register("tokens", TokenViewSet, basename="token")
router.register("audit", AuditEventViewSet, basename="audit")

NAME = r"[a-z0-9][a-z0-9_-]*"
test_package = ChannelTestPackageView.as_view()
urlpatterns = [
    # A channel's "test a package", as `channel/sub` or in the subchannel routes' form.
    re_path(
        rf"^channels/(?P<path>{NAME}(?:/{NAME})?)/test-package/$",
        test_package,
        name="channel-test-package",
    ),
    re_path(
        rf"^channels/(?P<parent_name>{NAME})/subchannels/(?P<name>{NAME})/test-package/$",
        test_package,
        name="subchannel-test-package",
    ),
    *router.urls,
]

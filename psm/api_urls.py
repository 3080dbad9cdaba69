"""The REST API under /api/: one router for every app's viewsets."""

from rest_framework.routers import DefaultRouter

from channels_app.api.views import ChannelViewSet, SubchannelViewSet
from mirrors_app.api.views import MirrorViewSet, SyncRunViewSet
from policies_app.api.views import PolicyViewSet, VulnerabilityViewSet
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
router.register("tokens", TokenViewSet, basename="token")
router.register("audit", AuditEventViewSet, basename="audit")

urlpatterns = router.urls

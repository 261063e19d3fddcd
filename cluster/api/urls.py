from rest_framework.routers import SimpleRouter

from .views import ClusterViewSet, HostViewSet

router = SimpleRouter()
router.register("hosts", HostViewSet, basename="api-host")
router.register("clusters", ClusterViewSet, basename="api-cluster")
urlpatterns = router.urls

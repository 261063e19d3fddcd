"""REST routes of the networks app (assembled under /api/ by portal/api_urls.py)."""

from rest_framework.routers import SimpleRouter

from .views import NetworkViewSet

router = SimpleRouter()
router.register("networks", NetworkViewSet, basename="api-network")
urlpatterns = router.urls

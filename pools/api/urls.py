"""REST routes of the pools app (assembled under /api/ by portal/api_urls.py)."""

from rest_framework.routers import SimpleRouter

from .views import PoolViewSet

router = SimpleRouter()
router.register("pools", PoolViewSet, basename="api-pool")
urlpatterns = router.urls

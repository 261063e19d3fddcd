"""REST routes of the accounts app (assembled under /api/ by portal/api_urls.py)."""

from rest_framework.routers import SimpleRouter

from .views import SSHKeyViewSet

router = SimpleRouter()
router.register("keys", SSHKeyViewSet, basename="api-key")
urlpatterns = router.urls

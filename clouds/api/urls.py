"""REST routes of the clouds app (assembled under /api/ by portal/api_urls.py)."""

from rest_framework.routers import SimpleRouter

from .neutron import urlpatterns as neutron_urls
from .views import CloudViewSet

router = SimpleRouter()
router.register("clouds", CloudViewSet, basename="api-cloud")
urlpatterns = [*neutron_urls, *router.urls]

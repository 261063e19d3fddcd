"""REST routes of the clouds app (assembled under /api/ by portal/api_urls.py)."""

from django.urls import path  # noqa: F401
from rest_framework.routers import SimpleRouter

router = SimpleRouter()
urlpatterns = [*router.urls]

"""REST routes of the clouds app (assembled under /api/ by portal/api_urls.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .glance import GlanceImagesView, GlanceImportView, GlancePublishView
from .neutron import urlpatterns as neutron_urls
from .views import CloudViewSet

router = SimpleRouter()
router.register("clouds", CloudViewSet, basename="api-cloud")
urlpatterns = [
    path("clouds/<str:cloud>/glance/images/", GlanceImagesView.as_view(), name="api-glance-images"),
    path("clouds/<str:cloud>/glance/images/<str:glance_id>/import/", GlanceImportView.as_view(),
         name="api-glance-import"),
    path("clouds/<str:cloud>/glance/publish/", GlancePublishView.as_view(), name="api-glance-publish"),
    *neutron_urls,
    *router.urls,
]

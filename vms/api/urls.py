"""REST routes under /api/ (included from portal/api_urls.py). Route names start with `api-`."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("vms", views.VMViewSet, basename="api-vm")
router.register("jobs", views.JobViewSet, basename="api-job")
router.register("images", views.ImageViewSet, basename="api-image")
router.register("flavors", views.FlavorViewSet, basename="api-flavor")
router.register("hosts", views.HostViewSet, basename="api-host")

urlpatterns = [
    path("quota/", views.QuotaView.as_view(), name="api-quota"),
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    *router.urls,
]

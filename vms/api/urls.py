"""REST routes of the vms app (assembled under /api/ by portal/api_urls.py). Route names start with `api-`."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("vms", views.VMViewSet, basename="api-vm")
router.register("foreign-domains", views.ForeignDomainViewSet, basename="api-foreign-domain")
router.register("flavors", views.FlavorViewSet, basename="api-flavor")
router.register("disks", views.DataVolumeViewSet, basename="api-disk")  # data disks (issue #11)
urlpatterns = router.urls

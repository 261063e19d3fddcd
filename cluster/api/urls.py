from rest_framework.routers import SimpleRouter

from .views import HostViewSet

router = SimpleRouter()
router.register("hosts", HostViewSet, basename="api-host")
urlpatterns = router.urls

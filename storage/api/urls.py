from rest_framework.routers import SimpleRouter

from .views import ImageViewSet

router = SimpleRouter()
router.register("images", ImageViewSet, basename="api-image")
urlpatterns = router.urls

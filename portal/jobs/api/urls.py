from rest_framework.routers import SimpleRouter

from .views import ExternalJobViewSet, JobViewSet

router = SimpleRouter()
# Before "jobs": the job routes take any id, "external" included.
router.register("jobs/external", ExternalJobViewSet, basename="api-external-job")
router.register("jobs", JobViewSet, basename="api-job")
urlpatterns = router.urls

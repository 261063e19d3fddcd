from django.urls import path
from rest_framework.routers import SimpleRouter

from .domains import StorageDomainViewSet
from .tus import UploadDetailView, UploadListView
from .views import ImageViewSet

router = SimpleRouter()
router.register("images", ImageViewSet, basename="api-image")
router.register("storage-domains", StorageDomainViewSet, basename="api-storage-domain")  # issue #11
urlpatterns = [
    *router.urls,
    path("uploads/", UploadListView.as_view(), name="api-upload-list"),
    path("uploads/<uuid:pk>/", UploadDetailView.as_view(), name="api-upload-detail"),
]

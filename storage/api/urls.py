from django.urls import path
from rest_framework.routers import SimpleRouter

from .tus import UploadDetailView, UploadListView
from .views import ImageViewSet

router = SimpleRouter()
router.register("images", ImageViewSet, basename="api-image")
urlpatterns = [
    *router.urls,
    path("uploads/", UploadListView.as_view(), name="api-upload-list"),
    path("uploads/<uuid:pk>/", UploadDetailView.as_view(), name="api-upload-detail"),
]

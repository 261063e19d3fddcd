"""Web pages of the image library (the REST API lives under /api/images/, see storage/api/)."""

from django.urls import path

from . import views

app_name = "storage"
urlpatterns = [
    path("", views.image_list_view, name="images"),
    path("<int:pk>/", views.image_detail_view, name="image"),
    path("<int:pk>/edit/", views.image_update_view, name="image-update"),
    path("<int:pk>/delete/", views.image_delete_view, name="image-delete"),
]

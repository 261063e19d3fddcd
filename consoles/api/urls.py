"""Console REST routes under /api/ (included from portal/api_urls.py). Route names start with `api-`."""

from django.urls import path

from . import views

urlpatterns = [
    path("vms/<str:pk>/console/", views.VMConsoleLinkView.as_view(), name="api-vm-console"),
]

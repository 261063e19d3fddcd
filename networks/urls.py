"""Web pages for networks (the REST API lives under /api/networks/, see networks/api/)."""

from django.urls import path

from . import views

app_name = "networks"
urlpatterns = [
    path("", views.network_list_view, name="list"),
]

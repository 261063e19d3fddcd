"""Quota pages, under /quotas/."""

from django.urls import path

from . import views

app_name = "quotas"
urlpatterns = [
    path("requests/", views.quota_request_list_view, name="requests"),
    path("requests/<int:pk>/<slug:decision>/", views.quota_request_decide_view, name="decide"),
]

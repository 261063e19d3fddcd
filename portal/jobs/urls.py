"""Job pages, under /jobs/."""

from django.urls import path

from . import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list_view, name="list"),
    path("<uuid:job_id>/", views.job_detail_view, name="detail"),
    path("<uuid:job_id>/cancel/", views.job_cancel_view, name="cancel"),
]

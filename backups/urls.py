"""Web pages for backups (the REST API lives under /api/, see backups/api/)."""

from django.urls import path

from . import views

app_name = "backups"
urlpatterns = [
    path("", views.backup_list_view, name="list"),
    path("vm/<int:pk>/", views.vm_backups_view, name="vm"),
    path("vm/<int:pk>/schedule/", views.vm_schedule_view, name="schedule"),
    path("<int:backup_id>/restore/", views.backup_restore_view, name="restore"),
    path("<int:backup_id>/delete/", views.backup_delete_view, name="delete"),
    path("<int:backup_id>/finish/", views.backup_finish_view, name="finish"),
]

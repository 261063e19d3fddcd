"""REST routes of the backups app (assembled under /api/ by portal/api_urls.py). Route names start with `api-`.

The VM-scoped routes (`vms/{id}/backups/`, `vms/{id}/backup-schedule/`) live here, not in vms' router:
vms is below backups and never imports it."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("backups", views.BackupViewSet, basename="api-backup")
urlpatterns = [
    *router.urls,
    path("vms/<str:vm_id>/backups/", views.VMBackupsView.as_view(), name="api-vm-backups"),
    path("vms/<str:vm_id>/backup-schedule/", views.VMBackupScheduleView.as_view(), name="api-vm-backup-schedule"),
]

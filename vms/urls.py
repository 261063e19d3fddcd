"""Web pages for VMs (the REST API lives under /api/, see vms/api/)."""

from django.urls import path

from . import views

app_name = "vms"
urlpatterns = [
    path("", views.vm_list_view, name="list"),
    path("vms/new/", views.vm_create_view, name="create"),
    path("vms/bulk/", views.vm_bulk_create_view, name="bulk-create"),
    path("vms/status.json", views.status_json_view, name="status"),
    path("vms/<int:pk>/", views.vm_detail_view, name="detail"),
    path("vms/<int:pk>/edit/", views.vm_update_view, name="update"),
    path("vms/<int:pk>/action/<slug:action>/", views.vm_action_view, name="action"),
    path("vms/<int:pk>/delete/", views.vm_delete_view, name="delete"),
    path("vms/<int:pk>/disk/", views.vm_grow_disk_view, name="grow-disk"),
    path("vms/<int:pk>/template/", views.vm_template_view, name="template"),
    path("vms/<int:pk>/migrate/", views.vm_migrate_view, name="migrate"),
    path("vms/<int:pk>/extend/", views.vm_extend_view, name="extend"),
    path("vms/<int:pk>/snapshots/", views.snapshot_list_view, name="snapshots"),
    path("vms/<int:pk>/snapshots/<int:sid>/<slug:op>/", views.snapshot_op_view, name="snapshot-op"),
    path("vms/<int:pk>/nics/", views.nic_list_view, name="nics"),
    path("vms/<int:pk>/nics/<int:nic_id>/remove/", views.nic_remove_view, name="nic-remove"),
    path("vms/<int:pk>/nics/<int:nic_id>/", views.nic_update_view, name="nic-update"),
    path("vms/<int:pk>/cdrom/", views.cdrom_view, name="cdrom"),
    path("vms/<int:pk>/cdrom/eject/", views.cdrom_eject_view, name="cdrom-eject"),
    # --- disks (issue #11) ---
    path("vms/<int:pk>/disks/", views.disk_list_view, name="disks"),
    path("vms/<int:pk>/disks/<int:disk_id>/remove/", views.disk_remove_view, name="disk-remove"),
    path("vms/<int:pk>/disks/<int:disk_id>/grow/", views.disk_grow_view, name="disk-grow"),
    path("vms/<int:pk>/disks/<int:disk_id>/properties/", views.disk_properties_view, name="disk-properties"),
    path("disks/", views.volume_list_view, name="volumes"),
    path("disks/<int:volume_id>/delete/", views.volume_delete_view, name="volume-delete"),
]

"""REST routes of the monitoring app (assembled under /api/ by portal/api_urls.py). The VM- and host-scoped
routes live here: vms and cluster are below monitoring and never import it."""

from django.urls import path

from . import views

urlpatterns = [
    path("vms/<str:vm_id>/metrics/", views.VMMetricsView.as_view(), name="api-vm-metrics"),
    path("hosts/<str:host_id>/metrics/", views.HostMetricsView.as_view(), name="api-host-metrics"),
]

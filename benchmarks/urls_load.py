"""The portal's URLs plus the load benchmark's bare view (benchmarks/load_app.py); only settings_load uses it."""

from django.urls import path

from benchmarks.load_app import bare_vm_list
from portal.urls import urlpatterns as portal_urlpatterns

urlpatterns = [
    path("bench/vms/", bare_vm_list, name="bench-bare-vms"),
    *portal_urlpatterns,
]

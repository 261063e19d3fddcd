"""The REST API under /api/: assembled from each app's own `api/urls.py`, plus the token endpoint."""

from django.urls import include, path
from rest_framework.routers import APIRootView

from portal.api import TokenView


class PortalAPIRootView(APIRootView):
    """The portal's REST API: VMs, jobs, images, flavors, networks, hosts (staff), your quota, your SSH keys, your uploads."""

    api_root_dict = {"vms": "api-vm-list", "jobs": "api-job-list", "images": "api-image-list",
                     "flavors": "api-flavor-list", "networks": "api-network-list", "hosts": "api-host-list",
                     "keys": "api-key-list", "uploads": "api-upload-list",
                     "backups": "api-backup-list",  # backups: issue #11
                     "pools": "api-pool-list"}  # issue #14


urlpatterns = [
    path("", PortalAPIRootView.as_view(), name="api-root"),
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("", include("vms.api.urls")),
    path("", include("portal.jobs.api.urls")),
    path("", include("storage.api.urls")),
    path("", include("networks.api.urls")),
    path("", include("cluster.api.urls")),
    path("", include("quotas.api.urls")),
    path("", include("accounts.api.urls")),
    path("", include("consoles.api.urls")),
    path("", include("backups.api.urls")),  # issue #11
    path("", include("pools.api.urls")),  # issue #14
    path("", include("reports.api.urls")),  # issue #14: usage reports (administrators)
    path("", include("monitoring.api.urls")),  # issue #14: VM and host metrics
    path("", include("clouds.api.urls")),  # issue #15: OpenStack clouds, Glance images, Neutron networks
]

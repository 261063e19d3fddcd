"""Fence and Declare down say what will happen to the host's VMs: how many highly available VMs restart
elsewhere, and which stay down (host-local disks, not highly available, HA off in the cluster)."""

from __future__ import annotations

import pytest

from cluster.choices import HostStatus
from cluster.ha_outlook import ha_outlook
from cluster.models import Cluster, Host
from storage.models import StoragePool, Volume
from vms.models import VM, VMDisk


@pytest.fixture
def silent_host(db):
    cluster, _ = Cluster.objects.get_or_create(name="lab")
    return Host.objects.create(name="vmp-a", uri="test:///nonexistent/vmp-a.xml", status=HostStatus.NON_RESPONSIVE,
                               cluster=cluster)


def _vm(host, owner, name, *, pool=None, ha=True, status="unknown", known="running"):
    vm = VM.objects.create(name=name, owner=owner, host=host, vcpus=1, memory_mib=64, disk_gib=1, status=status,
                           known_status=known, highly_available=ha)
    if pool is not None:
        volume = Volume.objects.create(pool=pool, name=f"{name}.qcow2", path=f"{pool.path}/{name}.qcow2",
                                       capacity_gib=1)
        VMDisk.objects.create(vm=vm, volume=volume)
    return vm


def test_outlook_counts_shared_local_and_not_ha(silent_host, django_user_model):
    owner = django_user_model.objects.create_user("carol", password="x")
    shared = StoragePool.objects.create(host=silent_host, name="nfs", path="/srv/nfs", shared=True)
    local = StoragePool.objects.create(host=silent_host, name="vmportal", path="/var/lib/vmportal")
    assert ha_outlook(silent_host) == "no VM was running there"
    _vm(silent_host, owner, "web1", pool=shared)
    _vm(silent_host, owner, "db1", pool=local)
    _vm(silent_host, owner, "db2", pool=local)
    _vm(silent_host, owner, "stopped1", pool=shared, known="stopped")  # its owner stopped it: stays stopped
    _vm(silent_host, owner, "plain", pool=shared, ha=False, status="running", known="")
    assert ha_outlook(silent_host) == ("1 highly available VM will restart elsewhere; 2 VMs with disks on "
                                       "host-local storage stay down; 1 VM not marked highly available stays down")
    Cluster.objects.filter(pk=silent_host.cluster_id).update(ha_enabled=False)
    silent_host.refresh_from_db()
    assert ha_outlook(silent_host).startswith("HA is off in cluster lab: its 3 VMs marked highly available stay down")


def test_declare_down_answers_say_what_happens(silent_host, django_user_model, client_for, admin_user, admin_client):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
    from django.urls import reverse

    owner = django_user_model.objects.create_user("carol", password="x")
    local = StoragePool.objects.create(host=silent_host, name="vmportal", path="/var/lib/vmportal")
    _vm(silent_host, owner, "db1", pool=local)
    url = reverse("admin:cluster_host_changelist")
    page = admin_client.post(url, {"action": "declare_down", ACTION_CHECKBOX_NAME: [silent_host.pk]}).content.decode()
    assert "once confirmed down: 1 VM with disks on host-local storage stays down" in page
    r = client_for(admin_user).post(f"/api/hosts/{silent_host.pk}/declare-down/")
    assert r.status_code == 200, r.content
    assert r.json()["message"] == "vmp-a is declared down: 1 VM with disks on host-local storage stays down."
    assert "restart elsewhere" not in r.json()["message"]

"""Cluster policy settings (cluster.clusters.cluster_update, the ClusterAdmin form and its balancing
preview) and the affinity group admin."""

from __future__ import annotations

import pytest

from cluster.clusters import cluster_update
from cluster.models import Cluster, Host
from portal.exceptions import ValidationFailed
from portal.models import AuditEvent
from vms.choices import VMStatus
from vms.models import VM, AffinityGroup

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(db):
    return Cluster.objects.create(name="lab-admin")


def test_cluster_update_validates_policy_and_properties(lab, admin_user):
    with pytest.raises(ValidationFailed) as caught:
        cluster_update(actor=admin_user, via="admin", cluster=lab, policy="fastest",
                       policy_properties={"high_utilization": 20, "low_utilization": 30, "max_concurrent_migrations": 1.5})
    errors = caught.value.errors
    assert errors["policy"][0].startswith("Unknown scheduling policy 'fastest' (known: ")
    assert errors["policy_properties"] == ["max_concurrent_migrations must be a whole number."]
    with pytest.raises(ValidationFailed, match=r"low_utilization \(30\) must be below high_utilization \(20\)"):
        cluster_update(actor=admin_user, via="admin", cluster=lab, policy_properties={"high_utilization": 20,
                                                                                       "low_utilization": 30})
    with pytest.raises(ValidationFailed, match="high_utilization is a percent"):
        cluster_update(actor=admin_user, via="admin", cluster=lab, policy_properties={"high_utilization": 120})
    updated = cluster_update(actor=admin_user, via="admin", cluster=lab, policy="power_saving",
                             policy_properties={"high_utilization": 70, "max_concurrent_migrations": 3.0})
    assert (updated.policy, updated.policy_properties) == ("power_saving", {"high_utilization": 70,
                                                                            "max_concurrent_migrations": 3})
    event = AuditEvent.objects.get(action="cluster.update")
    assert event.data["policy"] == {"from": "evenly_distributed", "to": "power_saving"}


def test_cluster_admin_form_errors_and_balancing_preview(lab, admin_user, client):
    client.force_login(admin_user)
    url = f"/admin/cluster/cluster/{lab.pk}/change/"
    response = client.post(url, {"name": "lab-admin", "policy": "evenly_distributed",
                                 "policy_properties": '{"high_utilization": 10, "low_utilization": 50}'})
    assert response.status_code == 200
    assert "low_utilization (50) must be below high_utilization (10)." in response.content.decode()
    response = client.post(url, {"name": "lab-admin", "policy": "evenly_distributed",
                                 "policy_properties": '{"high_utilization": 70}', "ha_enabled": "on"})
    assert response.status_code == 302
    lab.refresh_from_db()
    assert lab.policy_properties == {"high_utilization": 70}

    hot = Host.objects.create(name="hot", uri="test:///synthetic/hot", status="up", memory_mib=8192, cpus=4,
                              cluster=lab)
    Host.objects.create(name="cold", uri="test:///synthetic/cold", status="up", memory_mib=8192, cpus=4, cluster=lab)
    for name in ("big-one", "big-two"):
        VM.objects.create(name=name, owner=admin_user, host=hot, vcpus=1, memory_mib=3500, disk_gib=1,
                          status=VMStatus.RUNNING)
    response = client.post("/admin/cluster/cluster/", {"action": "preview_balancing", "_selected_action": [lab.pk]},
                           follow=True)
    page = " ".join(m.message for m in response.context["messages"])
    assert ("lab-admin (evenly_distributed): move big-one from hot to cold: hot has 85% of its memory committed "
            "(above 70%)") in page


def test_affinity_group_admin(admin_user, client, test_host):
    vm = VM.objects.create(name="member", owner=admin_user, host=test_host, vcpus=1, memory_mib=64, disk_gib=1,
                           status=VMStatus.STOPPED)
    client.force_login(admin_user)
    response = client.post("/admin/vms/affinitygroup/add/", {"name": "apart", "description": "", "enforcing": "on",
                                                             "vms": [vm.pk]})
    assert response.status_code == 302
    group = AffinityGroup.objects.get(name="apart")
    assert list(group.vms.all()) == [vm]
    assert AuditEvent.objects.filter(action="affinity_group.create", target_id=str(group.pk)).exists()
    assert client.get("/admin/vms/affinitygroup/").status_code == 200

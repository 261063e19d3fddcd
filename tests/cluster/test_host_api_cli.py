"""Hosts and clusters through the API (administrators only, read-only) and `manage.py host`."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from cluster.models import Cluster, Host
from portal.models import AuditEvent
from vms.services import vm_create

pytestmark = pytest.mark.django_db


def _api(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def test_the_host_api_shows_cluster_status_tags_capacity_and_load(admin_user, test_host, alice):
    Host.objects.filter(pk=test_host.pk).update(tags=["ssd"], memory_mib=2048, running_domains=1,
                                                power_off_command="/usr/bin/true")
    vm_create(actor=alice, via="web", name="web-1", vcpus=2, memory_mib=256, disk_gib=1)
    row = _api(admin_user).get("/api/hosts/testhost/").json()
    assert row["cluster"] == "Default" and row["status"] == "up" and row["tags"] == ["ssd"]
    assert row["memory_mib"] == 2048 and row["committed_memory_mib"] == 256 and row["committed_vcpus"] == 2
    assert row["vm_count"] == 1 and row["running_domains"] == 1 and row["max_jobs"] == 4
    assert row["screen_console"] is True and row["power_management"] is True
    assert "power_off_command" not in row  # commands stay in the admin
    assert {"cpu_usage_percent", "status_changed_at", "failures", "confirmed_down_at", "display_address",
            "migration_uri"} <= set(row)


def test_hosts_and_clusters_are_for_administrators_only(alice, test_host):
    for url in ("/api/hosts/", "/api/clusters/", "/api/clusters/Default/"):
        response = _api(alice).get(url)
        assert response.status_code == 403, url


def test_the_cluster_api_lists_policy_switches_and_hosts(admin_user, test_host, django_assert_max_num_queries):
    east = Cluster.objects.create(name="east", policy="power_saving", power_saving_enabled=True,
                                  policy_properties={"low_utilization": 20})
    Host.objects.create(name="kvm2", uri="qemu+tcp://10.0.0.2/system", cluster=east, status="standby")
    with django_assert_max_num_queries(4):
        body = _api(admin_user).get("/api/clusters/").json()
    rows = {row["name"]: row for row in body["results"]}
    assert rows["east"]["policy"] == "power_saving" and rows["east"]["power_saving_enabled"] is True
    assert rows["east"]["policy_properties"] == {"low_utilization": 20}
    assert [h["name"] for h in rows["east"]["hosts"]] == ["kvm2"] and rows["east"]["hosts"][0]["status"] == "standby"
    assert [h["name"] for h in rows["Default"]["hosts"]] == ["testhost"]
    assert _api(admin_user).get(f"/api/clusters/{east.pk}/").json()["name"] == "east"
    missing = _api(admin_user).get("/api/clusters/nope/")
    assert missing.status_code == 404 and missing.json()["detail"] == "Cluster 'nope' not found."


def _host(*args) -> str:
    out = io.StringIO()
    call_command("host", *args, stdout=out)
    return out.getvalue()


def test_the_host_command_adds_lists_shows_and_sets(db, alice):
    Cluster.objects.create(name="lab")
    out = _host("add", "spare", "qemu+unix:///system?socket=/nope", "--cluster", "lab", "--tags", "ssd,gpu",
                "--migration-uri", "qemu+tcp://10.0.0.7/system", "--display-address", "10.0.0.7")
    assert "Registered spare, but it is down" in out
    host = Host.objects.get(name="spare")
    assert host.cluster.name == "lab" and host.tags == ["ssd", "gpu"] and host.display_address == "10.0.0.7"
    assert host.migration_uri == "qemu+tcp://10.0.0.7/system"
    listing = _host("list")
    assert "spare" in listing and "lab" in listing and "down" in listing and "COMMITTED" in listing
    shown = dict(line.split(":", 1) for line in _host("show", "spare").splitlines())
    assert shown["display address"].strip() == "10.0.0.7" and shown["tags"].strip() == "ssd,gpu"
    out = _host("set", "spare", "--max-jobs", "2", "--power-on", "/usr/bin/ipmitool power on", "--disable")
    assert out.strip() == "spare: max jobs set, power on command set, disabled"
    host.refresh_from_db()
    assert host.max_jobs == 2 and host.power_on_command == "/usr/bin/ipmitool power on" and not host.enabled
    assert AuditEvent.objects.filter(action="host.configure", via="cli", target_id=str(host.pk)).count() == 2
    _host("set", "spare", "--display-address", "")
    host.refresh_from_db()
    assert host.display_address == ""
    assert "none: no screen console" in _host("show", "spare")


def test_the_host_command_refuses_bad_input_before_registering(db, admin_user, alice):
    with pytest.raises(CommandError, match="Unknown libvirt URI scheme 'xen'"):
        _host("add", "x", "xen://box/")
    with pytest.raises(CommandError, match="never a loopback address"):
        _host("add", "x", "qemu+tcp://10.0.0.2/system", "--display-address", "127.0.0.1")
    with pytest.raises(CommandError, match="No cluster named 'nope'"):
        _host("add", "x", "qemu+tcp://10.0.0.2/system", "--cluster", "nope")
    assert not Host.objects.filter(name="x").exists()
    with pytest.raises(CommandError, match="Only administrators"):
        _host("--user", "alice", "list")
    Host.objects.create(name="kvm2", uri="qemu+tcp://10.0.0.2/system")
    with pytest.raises(CommandError, match="absolute path") as caught:
        _host("--user", admin_user.username, "set", "kvm2", "--power-off", "ipmitool off")
    assert caught.value.returncode == 2


def test_adding_a_host_never_renames_another_or_fails_on_a_taken_name(db):
    Host.objects.create(name="kvm2", uri="qemu+unix:///system?socket=/nope2")
    # the same URI under a new name: refused, the registered host keeps its name (no silent rename)
    with pytest.raises(CommandError, match="already registered as host 'kvm2'") as caught:
        _host("add", "kvm3", "qemu+unix:///system?socket=/nope2")
    assert caught.value.returncode == 2
    assert list(Host.objects.values_list("name", flat=True)) == ["kvm2"]
    # a taken name with another URI: a clear error, not a database constraint's traceback
    with pytest.raises(CommandError, match="A host named 'kvm2' is already registered"):
        _host("add", "kvm2", "qemu+unix:///system?socket=/elsewhere")
    assert Host.objects.count() == 1

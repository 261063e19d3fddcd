"""Gaps a fresh user met: the URI help names every scheme, setup_portal keeps a registered host's name."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import override_settings

from cluster.hostconfig import host_uri_check
from cluster.models import Host
from cluster.services import host_register
from portal.exceptions import ValidationFailed


def test_unknown_scheme_lists_qemu_unix_too():
    with pytest.raises(ValidationFailed) as info:
        host_uri_check("xen:///system")
    text = str(info.value.errors["uri"])
    for scheme in ("qemu:///", "qemu+ssh://", "qemu+tcp://", "qemu+tls://", "qemu+unix:///", "test:///"):
        assert scheme in text, scheme


def test_setup_portal_keeps_the_name_of_a_registered_host(db, tmp_path):
    with override_settings(LIBVIRT_URI="test:///default", GUEST_DIR=str(tmp_path / "none"), DATA_DIR=str(tmp_path)):
        host_register(actor=None, name="kvm-main", uri="test:///default")
        call_command("setup_portal", "--no-probe", "--quiet")
        assert list(Host.objects.values_list("name", flat=True)) == ["kvm-main"]
        Host.objects.all().delete()
        call_command("setup_portal", "--no-probe", "--quiet")
        assert list(Host.objects.values_list("name", flat=True)) == ["local"]  # a new host is "local"


# --- manage.py cluster add|list|set (cluster.clusters.cluster_create / cluster_update) ---------------------

def _run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_cluster_cli_add_list_set_then_host_add_into_it(db, admin_user, alice):
    from django.core.management.base import CommandError

    from cluster.models import Cluster
    from portal.models import AuditEvent

    with pytest.raises(CommandError, match="No cluster named 'lab'|not found"):
        _run("host", "add", "kvm2", "test:///default", "--cluster", "lab")
    text = _run("cluster", "add", "lab", "--policy", "power_saving", "--no-ha", "--balancing",
                "--properties", '{"high_utilization": 70}')
    assert text.startswith("Created lab: policy power_saving, balancing on, power saving off, HA off")
    lab = Cluster.objects.get(name="lab")
    assert (lab.policy, lab.ha_enabled, lab.balancing_enabled, lab.policy_properties) == (
        "power_saving", False, True, {"high_utilization": 70})
    assert AuditEvent.objects.filter(action="cluster.create", via="cli").count() == 1
    _run("host", "add", "kvm2", "test:///default", "--cluster", "lab")
    assert Host.objects.get(name="kvm2").cluster == lab
    listing = _run("cluster", "list")
    assert "lab" in listing and "kvm2" in listing
    _run("cluster", "set", "lab", "--ha", "--no-balancing", "--rename", "lab2")
    lab.refresh_from_db()
    assert (lab.name, lab.ha_enabled, lab.balancing_enabled) == ("lab2", True, False)
    # refused: unknown policy, bad properties, a duplicate name, not JSON, a user who is not an administrator
    for args, message in ((("add", "x", "--policy", "fastest"), "Unknown scheduling policy"),
                          (("add", "x", "--properties", '{"high_utilization": 120}'), "percent"),
                          (("add", "x", "--properties", "{oops"), "not JSON"),
                          (("add", "lab2"), "already exists"),
                          (("set", "nosuch", "--ha"), "not found")):
        with pytest.raises(CommandError, match=message):
            _run("cluster", *args)
    assert not Cluster.objects.filter(name="x").exists()  # nothing made when a setting is refused
    with pytest.raises(CommandError, match="Only administrators"):
        _run("cluster", "--user", alice.username, "add", "y")
    with pytest.raises(CommandError, match="Nothing to change"):
        _run("cluster", "set", "lab2")


def test_cluster_admin_add_goes_through_cluster_create(admin_client, db):
    from django.urls import reverse

    from cluster.models import Cluster
    from portal.models import AuditEvent

    url = reverse("admin:cluster_cluster_add")
    data = {"name": "lab", "description": "", "policy": "vm_count", "policy_properties": "{}", "ha_enabled": "on"}
    response = admin_client.post(url, data, follow=True)
    assert response.status_code == 200
    lab = Cluster.objects.get(name="lab")
    assert (lab.policy, lab.ha_enabled, lab.balancing_enabled) == ("vm_count", True, False)
    assert AuditEvent.objects.filter(action="cluster.create", via="admin").exists()
    response = admin_client.post(url, {**data, "policy_properties": '{"high_utilization": 500}'})
    assert response.status_code == 200 and "percent" in response.content.decode()
    assert Cluster.objects.count() == 1

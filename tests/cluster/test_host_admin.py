"""Host writes from the admin go through cluster.services (audited), and refuse what they must."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cluster.models import Host
from cluster.services import host_delete, host_set_enabled
from portal.choices import Via
from portal.exceptions import Conflict, PermissionDenied, ValidationFailed
from portal.models import AuditEvent
from vms.models import VM
from vms.services import vm_create

pytestmark = pytest.mark.django_db


def _change(admin_client, host: Host, **changes):
    host.refresh_from_db()
    data = {"name": host.name, "enabled": "on" if host.enabled else "", "domain_type": host.domain_type,
            "cluster": str(host.cluster_id or ""), "tags": ", ".join(host.tags), "max_jobs": str(host.max_jobs),
            "display_address": host.display_address, "migration_uri": host.migration_uri,
            "power_on_command": host.power_on_command, "power_off_command": host.power_off_command,
            "power_status_command": host.power_status_command, **changes}
    data = {k: v for k, v in data.items() if v != ""}
    return admin_client.post(reverse("admin:cluster_host_change", args=[host.pk]), data, follow=True)


def test_disabling_a_host_in_the_admin_is_audited_through_the_service(admin_client, test_host):
    response = _change(admin_client, test_host, enabled="")
    assert response.status_code == 200
    test_host.refresh_from_db()
    assert test_host.enabled is False
    event = AuditEvent.objects.get(action="host.disable", target_id=str(test_host.pk))
    assert event.via == Via.ADMIN and "Disabled testhost for new VMs" in event.message
    _change(admin_client, test_host, enabled="on")
    test_host.refresh_from_db()
    assert test_host.enabled is True and AuditEvent.objects.filter(action="host.enable").exists()


def test_only_administrators_enable_or_disable_hosts(test_host, alice):
    with pytest.raises(PermissionDenied, match="Only administrators enable or disable hosts"):
        host_set_enabled(actor=alice, via=Via.API, host=test_host, enabled=False)
    test_host.refresh_from_db()
    assert test_host.enabled is True


def test_a_host_with_vms_is_not_deleted_and_says_why(admin_user, test_host, alice):
    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1)
    with pytest.raises(Conflict, match="1 VM\\(s\\) still live on it"):
        host_delete(actor=admin_user, via=Via.ADMIN, host=test_host)
    assert Host.objects.filter(pk=test_host.pk).exists()


def test_deleting_an_empty_host_in_the_admin_goes_through_the_service(admin_client, admin_user):
    from cluster.services import host_register

    spare = host_register(actor=admin_user, via=Via.CLI, name="spare", uri="qemu+unix:///system?socket=/nope")
    response = admin_client.post(reverse("admin:cluster_host_delete", args=[spare.pk]), {"post": "yes"},
                                 follow=True)
    assert response.status_code == 200
    assert not Host.objects.filter(pk=spare.pk).exists()
    event = AuditEvent.objects.get(action="host.delete", target_name="spare")
    assert event.via == Via.ADMIN and event.actor == admin_user


@pytest.mark.django_db(transaction=True)  # the jobs run on commit
def test_pause_and_resume_are_admin_actions_through_the_service(admin_client, test_host, alice):
    vm = VM.objects.get(pk=vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128,
                                     disk_gib=1).vm.pk)
    url = reverse("admin:vms_vm_changelist")
    page = admin_client.post(url, {"action": "pause", "_selected_action": [str(vm.pk)]}, follow=True)
    vm.refresh_from_db()
    assert vm.status == "paused" and "Pausing web-1" in page.content.decode()
    page = admin_client.post(url, {"action": "resume", "_selected_action": [str(vm.pk)]}, follow=True)
    vm.refresh_from_db()
    assert vm.status == "running"
    assert AuditEvent.objects.filter(action="vm.pause", via=Via.ADMIN, target_id=str(vm.pk)).exists()
    assert AuditEvent.objects.filter(action="vm.resume", via=Via.ADMIN, target_id=str(vm.pk)).exists()


# --- the host's settings, capacity and load (issue #12) ------------------------------------------------

def test_the_host_list_shows_cluster_status_committed_memory_and_running_vms(admin_client, test_host, alice):
    from cluster.models import Cluster

    Host.objects.filter(pk=test_host.pk).update(memory_mib=1024, running_domains=3)
    Host.objects.create(name="standby-1", uri="qemu+tcp://10.0.0.9/system", status="standby",
                        cluster=Cluster.objects.create(name="east"))
    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=256, disk_gib=1)
    html = admin_client.get(reverse("admin:cluster_host_changelist")).content.decode()
    assert "Default" in html and "east" in html
    assert "Standby (powered down to save power)" in html and "pbadge-info" in html
    assert "25%" in html  # 256 MiB committed of 1 GiB
    assert "<td class=\"field-running_vms\">3</td>" in html
    filtered = admin_client.get(reverse("admin:cluster_host_changelist") + "?status__exact=standby")
    assert "standby-1" in filtered.content.decode() and "testhost" not in filtered.content.decode()


def test_the_change_page_shows_capacity_and_saves_settings_through_the_service(admin_client, test_host):
    from cluster.models import Cluster

    page = admin_client.get(reverse("admin:cluster_host_change", args=[test_host.pk])).content.decode()
    for label in ("Capacity and load", "Power management", "committed memory", "running VMs", "CPU usage",
                  "status since", "confirmed down", "Failures"):
        assert label.lower() in page.lower(), label
    east = Cluster.objects.create(name="east")
    response = _change(admin_client, test_host, cluster=str(east.pk), tags="ssd, gpu", max_jobs="2",
                       display_address="127.0.0.1", migration_uri="qemu+tcp://10.0.0.1/system",
                       power_on_command="/usr/bin/ipmitool -H bmc1 chassis power on")
    assert response.status_code == 200 and "Not saved" not in response.content.decode()
    test_host.refresh_from_db()
    assert test_host.cluster == east and test_host.tags == ["ssd", "gpu"] and test_host.max_jobs == 2
    assert test_host.migration_uri == "qemu+tcp://10.0.0.1/system"
    assert test_host.power_on_command == "/usr/bin/ipmitool -H bmc1 chassis power on"
    event = AuditEvent.objects.get(action="host.configure", target_id=str(test_host.pk))
    assert event.via == Via.ADMIN and "tags ssd,gpu" in event.message and "power on command set" in event.message


def test_bad_settings_are_form_errors_and_nothing_is_saved(admin_client, admin_user):
    remote = Host.objects.create(name="kvm2", uri="qemu+tcp://10.0.0.2/system")
    from cluster.services import cluster_default

    Host.objects.filter(pk=remote.pk).update(cluster=cluster_default())
    response = _change(admin_client, remote, display_address="127.0.0.1", power_off_command="ipmitool off",
                       power_status_command="/usr/bin/check 'unclosed", max_jobs="0")
    html = response.content.decode()
    assert "never a loopback address" in html
    assert "Start with the executable&#x27;s absolute path" in html
    assert "Cannot split this command line" in html
    assert "Between 1 and 64 jobs at once." in html
    remote.refresh_from_db()
    assert remote.display_address == "" and remote.power_off_command == "" and remote.max_jobs == 4
    assert not AuditEvent.objects.filter(action="host.configure").exists()


def test_registering_a_host_refuses_unknown_uri_schemes_in_every_door(admin_client, admin_user):
    from cluster.services import host_register

    response = admin_client.post(reverse("admin:cluster_host_add"),
                                 {"name": "x", "uri": "xen://box/", "domain_type": "auto", "enabled": "on"})
    html = response.content.decode()
    assert response.status_code == 200 and "Unknown libvirt URI scheme &#x27;xen&#x27;" in html
    assert "qemu+ssh://root@host/system" in html  # the help text names the transports
    for bad, message in (("xen://box/", "Unknown libvirt URI scheme"), ("qemu+ssh:///system", "names the remote host"),
                         ("qemu+tcp://10.0.0.2/", "ends in /system")):
        with pytest.raises(ValidationFailed, match=message):
            host_register(actor=admin_user, via=Via.API, name="x", uri=bad)
    assert not Host.objects.filter(name="x").exists()


def test_registering_in_the_admin_applies_the_cluster_and_settings(admin_client):
    from cluster.models import Cluster

    lab = Cluster.objects.create(name="lab")
    response = admin_client.post(reverse("admin:cluster_host_add"), {
        "name": "spare", "uri": "qemu+unix:///system?socket=/nope", "domain_type": "qemu", "enabled": "on",
        "cluster": str(lab.pk), "tags": "ssd", "display_address": "10.0.0.7"}, follow=True)
    assert response.status_code == 200
    host = Host.objects.get(name="spare")
    assert host.cluster == lab and host.tags == ["ssd"] and host.display_address == "10.0.0.7"

"""Per-VM scheduling settings (HA, HA priority, pinned hosts, required tags): the service's rules and
permissions, its audit, and every door — admin change page, REST API, `manage.py vm set` — plus a
placement that honours a pin set this way. Fast: VM rows on the test driver's host and synthetic hosts
(a scheduling change calls no host)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from cluster.models import Cluster, Host
from cluster.scheduler import schedule
from portal.choices import Via
from portal.exceptions import NotFound, PermissionDenied, ValidationFailed
from portal.models import AuditEvent
from storage.models import StoragePool, Volume
from vms.choices import VMStatus
from vms.models import VM, VMDisk
from vms.scheduling import vm_request, vm_scheduling_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(test_host):
    """test_host plus a second synthetic host of its cluster (tagged ssd), a disabled one, and one in
    another cluster (facts set by hand: never dialled)."""
    facts = {"status": "up", "memory_mib": 8192, "free_memory_mib": 8192, "cpus": 4}
    other = Host.objects.create(name="hostb", uri="test:///synthetic/b", cluster=test_host.cluster, tags=["ssd"],
                                **facts)
    off = Host.objects.create(name="hostoff", uri="test:///synthetic/off", cluster=test_host.cluster,
                              enabled=False, **facts)
    elsewhere = Host.objects.create(name="hostx", uri="test:///synthetic/x",
                                    cluster=Cluster.objects.create(name="other"), **facts)
    return test_host, other, off, elsewhere


def _vm(owner, host, name="web-1", status=VMStatus.RUNNING):
    return VM.objects.create(name=name, owner=owner, host=host, vcpus=1, memory_mib=256, disk_gib=1, status=status)


def _local_disk(vm):
    pool = StoragePool.objects.get_or_create(host=vm.host, name="local-pool", defaults={"path": "/var/x"})[0]
    VMDisk.objects.create(vm=vm, volume=Volume.objects.create(pool=pool, name=f"{vm.name}-disk", capacity_gib=1))


# --- the service ------------------------------------------------------------------------------------

def test_admin_sets_every_setting_in_one_audited_change(hosts, alice, admin_user):
    host, other, _off, _x = hosts
    vm = _vm(alice, host)
    result = vm_scheduling_update(actor=admin_user, via=Via.API, vm=vm, highly_available=True, ha_priority=80,
                                  pinned_hosts=[host, "hostb"], required_tags="ssd, ssd,gpu")
    vm.refresh_from_db()
    assert (vm.highly_available, vm.ha_priority, vm.required_tags) == (True, 80, ["ssd", "gpu"])
    assert set(vm.pinned_hosts.all()) == {host, other}
    assert result.changed == {"highly_available": True, "ha_priority": 80, "required_tags": ["ssd", "gpu"],
                              "pinned_hosts": ["hostb", "testhost"]}
    event = AuditEvent.objects.get(action="vm.scheduling", target_id=str(vm.pk))
    assert (event.actor, event.via) == (admin_user, Via.API)
    assert event.message.startswith("web-1: highly available; HA priority 80; requires the tags ssd, gpu; "
                                    "pinned to hostb, testhost.")
    assert event.data["pinned_hosts"] == ["hostb", "testhost"]
    # The VM's host lacks the tags: saved, with a warning that nothing moves now; nobody carries gpu.
    assert any("stays on testhost, which lacks the tags gpu, ssd" in w and "next placement or migration" in w
               for w in result.warnings)
    assert any("No enabled host web-1 may use carries the tags gpu, ssd" in w for w in result.warnings)
    assert all(w in event.message for w in result.warnings)

    # Same values again: nothing changes, nothing is audited; [] unpins and clears.
    again = vm_scheduling_update(actor=admin_user, via=Via.CLI, vm=vm.pk, ha_priority=80, pinned_hosts=[other.pk,
                                                                                                        host.name])
    assert again.changed == {} and "No change" in again.message
    assert AuditEvent.objects.filter(action="vm.scheduling").count() == 1
    vm_scheduling_update(actor=admin_user, via=Via.CLI, vm=vm, pinned_hosts=[], required_tags=[],
                         highly_available=False)
    vm.refresh_from_db()
    assert (vm.highly_available, vm.required_tags, list(vm.pinned_hosts.all())) == (False, [], [])


def test_only_administrators_change_where_a_vm_may_run(hosts, alice, bob):
    vm = _vm(alice, hosts[0])
    for actor in (alice, bob):  # its owner too
        with pytest.raises(PermissionDenied, match="Only administrators"):
            vm_scheduling_update(actor=actor, via=Via.API, vm=vm, highly_available=True)
    vm.refresh_from_db()
    assert not vm.highly_available
    assert AuditEvent.objects.filter(action="vm.scheduling").count() == 0


def test_validation_names_each_wrong_value_on_its_field(hosts, alice, admin_user):
    host, _other, _off, _x = hosts
    vm = _vm(alice, host)
    with pytest.raises(ValidationFailed) as exc:
        vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, ha_priority=101,
                             pinned_hosts=["nosuch", "hostoff", "hostx", "testhost"], required_tags=["bad tag"])
    errors = exc.value.errors
    assert errors["ha_priority"] == ["The HA priority is a whole number from 0 to 100 (higher restarts first)."]
    assert errors["pinned_hosts"] == [
        "No host 'nosuch'.",
        "Host hostoff is disabled: enable it before pinning VMs to it.",
        "Host hostx is in other, not in web-1's cluster Default: a VM runs only on hosts of its cluster."]
    assert errors["required_tags"] == ["Tag 'bad tag': letters, digits, - _ . : only (at most 50)."]
    for bad in (-1, True, "x"):
        with pytest.raises(ValidationFailed, match="whole number from 0 to 100"):
            vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, ha_priority=bad)
    with pytest.raises(ValidationFailed, match="true or false"):
        vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, highly_available="yes")  # type: ignore[arg-type]
    vm.refresh_from_db()
    assert (vm.ha_priority, list(vm.pinned_hosts.all()), vm.required_tags) == (50, [], [])
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.DELETED)
    with pytest.raises(NotFound):
        vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, ha_priority=10)


def test_warnings_pin_elsewhere_and_ha_on_local_storage(hosts, alice, admin_user):
    host, other, _off, _x = hosts
    vm = _vm(alice, host)
    _local_disk(vm)
    result = vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, pinned_hosts=["hostb"],
                                  highly_available=True)
    assert list(VM.objects.get(pk=vm.pk).pinned_hosts.all()) == [other]  # allowed while it runs elsewhere
    text = " ".join(result.warnings)
    assert "web-1 stays on testhost, which is not among its pinned hosts: the settings apply at its next " \
           "placement or migration (it is not moved now)." in text
    assert "HA needs shared storage" in text and "web-1-disk (pool local-pool)" in text
    assert "HA needs shared storage" in AuditEvent.objects.get(action="vm.scheduling").message
    # On shared storage: no storage warning.
    StoragePool.objects.filter(name="local-pool").update(shared=True)
    result = vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, highly_available=False)
    result = vm_scheduling_update(actor=admin_user, via=Via.ADMIN, vm=vm, highly_available=True)
    assert not any("shared storage" in w for w in result.warnings)


def test_a_placement_honours_a_pin_set_through_the_service(hosts, alice, admin_user):
    host, other, _off, _x = hosts
    vm = _vm(alice, host, status=VMStatus.STOPPED)
    cluster = Cluster.objects.get(pk=host.cluster_id)
    for pinned in (other, host):
        vm_scheduling_update(actor=admin_user, via=Via.CLI, vm=vm, pinned_hosts=[pinned.name])
        placement = schedule(request=vm_request(vm), cluster=cluster)
        assert placement.host == pinned
    vm_scheduling_update(actor=admin_user, via=Via.CLI, vm=vm, pinned_hosts=[], required_tags=["ssd"])
    assert schedule(request=vm_request(vm), cluster=cluster).host == other  # the only host tagged ssd


# --- the admin change page ------------------------------------------------------------------------------

def _change_form_data(client, vm) -> dict:
    from tests.vms.test_admin import _post_data

    return _post_data(client.get(reverse("admin:vms_vm_change", args=[vm.pk])))


def test_admin_change_page_round_trip_with_errors_on_the_fields(hosts, alice, admin_user, client):
    host, other, _off, _x = hosts
    vm = _vm(alice, host)
    client.force_login(admin_user)
    url = reverse("admin:vms_vm_change", args=[vm.pk])
    page = client.get(url)
    assert "Scheduling and HA" in page.content.decode()
    form = _change_form_data(client, vm)
    assert (form["ha_priority"], form["pinned_hosts"]) == ("50", [])

    bad = client.post(url, {**form, "ha_priority": "200", "pinned_hosts": [str(hosts[3].pk)],
                            "required_tags": "a b"})
    assert bad.status_code == 200
    errors = bad.context["adminform"].form.errors
    assert "from 0 to 100" in str(errors["ha_priority"])
    assert "Host hostx is in other" in str(errors["pinned_hosts"])
    assert "letters, digits" in str(errors["required_tags"])
    assert not AuditEvent.objects.filter(action="vm.scheduling").exists()

    done = client.post(url, {**form, "highly_available": "on", "ha_priority": "70", "pinned_hosts": [str(other.pk)],
                             "required_tags": "ssd"}, follow=True)
    texts = [str(m.message) for m in done.context["messages"]]
    assert any("was changed successfully" in t for t in texts)
    assert any("not among its pinned hosts" in t for t in texts)  # the warning, shown too
    vm.refresh_from_db()
    assert (vm.highly_available, vm.ha_priority, vm.required_tags) == (True, 70, ["ssd"])
    assert list(vm.pinned_hosts.all()) == [other]
    event = AuditEvent.objects.get(action="vm.scheduling")
    assert (event.via, event.actor) == (Via.ADMIN, admin_user)
    assert not AuditEvent.objects.filter(action="vm.update").exists()  # name and description untouched
    # The page shows the saved values back.
    again = _change_form_data(client, vm)
    assert (again["ha_priority"], again["required_tags"], again["pinned_hosts"], again["highly_available"]) == (
        "70", "ssd", [str(other.pk)], "on")


# --- the REST API -------------------------------------------------------------------------------------

def test_api_patch_admins_only_and_who_sees_what(hosts, alice, admin_user, client_for):
    host, other, _off, _x = hosts
    vm = _vm(alice, host)
    url = f"/api/vms/{vm.pk}/"
    owner, admin_client = client_for(alice), client_for(admin_user)

    refused = owner.patch(url, {"highly_available": True, "description": "mine"}, format="json")
    assert refused.status_code == 403, refused.content
    assert refused.json()["code"] == "forbidden" and "Only administrators" in refused.json()["detail"]
    vm.refresh_from_db()
    assert (vm.highly_available, vm.description) == (False, "")  # nothing changed, not even the description

    ok = admin_client.patch(url, {"highly_available": True, "ha_priority": 90, "pinned_hosts": ["hostb"],
                                  "required_tags": ["ssd"], "description": "pinned"}, format="json")
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert (body["highly_available"], body["ha_priority"], body["pinned_hosts"], body["required_tags"],
            body["description"]) == (True, 90, ["hostb"], ["ssd"], "pinned")
    assert any("not among its pinned hosts" in w for w in body["warnings"])
    assert AuditEvent.objects.get(action="vm.scheduling").via == Via.API

    bad = admin_client.patch(url, {"ha_priority": 101, "pinned_hosts": ["nosuch"]}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) >= {"ha_priority", "pinned_hosts"}, bad.json()

    seen = owner.get(url).json()  # the owner sees whether it is HA, not where it may run
    assert seen["highly_available"] is True
    assert not {"ha_priority", "pinned_hosts", "required_tags"} & set(seen)
    listed = admin_client.get("/api/vms/").json()["results"][0]
    assert (listed["pinned_hosts"], listed["required_tags"]) == (["hostb"], ["ssd"])
    # A plain rename by the owner still works.
    assert owner.patch(url, {"description": "again"}, format="json").status_code == 200


# --- the command line -------------------------------------------------------------------------------

def _vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_cli_vm_set(hosts, alice, admin_user):
    host, other, _off, _x = hosts
    vm = _vm(alice, host)
    out = _vm_cmd("--user", admin_user.username, "set", "web-1", "--ha", "--ha-priority", "75", "--pin",
                  "hostb,testhost", "--tags", "ssd")
    assert "web-1: highly available; HA priority 75; requires the tags ssd; pinned to hostb, testhost." in out
    assert "warning: web-1 stays on testhost, which lacks the tag ssd" in out
    assert "pinned hosts      hostb, testhost" in out
    vm.refresh_from_db()
    assert (vm.highly_available, vm.ha_priority, vm.required_tags) == (True, 75, ["ssd"])
    assert AuditEvent.objects.get(action="vm.scheduling").via == Via.CLI

    out = _vm_cmd("--user", admin_user.username, "set", "web-1", "--no-ha", "--unpin", "--no-tags")
    assert "not highly available" in out and "pinned hosts      any host of its cluster" in out
    vm.refresh_from_db()
    assert (vm.highly_available, vm.required_tags, vm.pinned_hosts.count()) == (False, [], 0)

    with pytest.raises(CommandError, match="from 0 to 100") as bad:
        _vm_cmd("--user", admin_user.username, "set", "web-1", "--ha-priority", "abc")
    assert bad.value.returncode == ValidationFailed.exit_code
    with pytest.raises(CommandError, match="No host 'nope'"):
        _vm_cmd("--user", admin_user.username, "set", "web-1", "--pin", "nope")
    with pytest.raises(CommandError, match="Only administrators") as denied:
        _vm_cmd("--user", "alice", "set", "web-1", "--ha")
    assert denied.value.returncode == PermissionDenied.exit_code
    assert other.pinned_vms.count() == 0

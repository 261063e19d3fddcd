"""`manage.py vm`: the same services from the command line (libvirt's test driver, jobs run at once)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)


def vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_lifecycle_and_snapshots_from_the_command_line(test_host, alice):
    out = vm_cmd("--user", "alice", "--wait", "create", "cli-1", "--vcpus", "1", "--memory-mib", "128",
                 "--disk-gib", "1")
    assert "Creating cli-1." in out and "succeeded 100%" in out
    vm = VM.objects.get(name="cli-1")
    assert vm.status == "running" and vm.created_via == "cli"
    assert "cli-1" in vm_cmd("--user", "alice", "list")

    assert "Taking snapshot s1 of cli-1." in vm_cmd("--user", "alice", "--wait", "snapshot", "cli-1", "s1")
    assert "disks+memory" in vm_cmd("--user", "alice", "snapshots", "cli-1")
    vm_cmd("--user", "alice", "--wait", "stop", "cli-1")
    assert get_driver("test:///default").domain_info(str(vm.uuid)).state == PowerState.SHUTOFF
    vm_cmd("--user", "alice", "--wait", "revert", "cli-1", "s1")
    vm.refresh_from_db()
    assert vm.status == "running"
    vm_cmd("--user", "alice", "--wait", "delete-snapshot", "cli-1", "s1")
    assert vm_cmd("--user", "alice", "snapshots", "cli-1") == ""
    vm_cmd("--user", "alice", "--wait", "delete", "cli-1")
    vm.refresh_from_db()
    assert vm.status == "deleted"
    assert set(AuditEvent.objects.filter(target_id=str(vm.pk)).values_list("via", flat=True)) == {"cli"}


def test_command_line_errors_are_clear(test_host, alice, bob):
    with pytest.raises(CommandError, match="Invalid name 'Bad_Name'"):
        vm_cmd("--user", "alice", "create", "Bad_Name", "--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1")
    with pytest.raises(CommandError, match="No user 'nobody'"):
        vm_cmd("--user", "nobody", "list")
    vm_cmd("--user", "alice", "create", "mine", "--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1")
    with pytest.raises(CommandError, match="No VM named 'mine'"):
        vm_cmd("--user", "bob", "stop", "mine")
    with pytest.raises(CommandError, match="has no snapshot 'nope'"):
        vm_cmd("--user", "alice", "revert", "mine", "nope")
    assert VM.objects.filter(name="Bad_Name").count() == 0

"""Idle VMs: running, average CPU below the threshold over the window, enough samples to tell; stopping them."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from portal.exceptions import PermissionDenied
from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from reports import services as report_services
from reports.services import idle_auto_stop, idle_vms_stop
from reports.usage import idle_vms
from tests.support import api_client
from vms import services as vm_services
from vms.choices import VMStatus
from vms.models import VM

from .fixtures import T0, host, hourly, vm

NOW = T0 + timedelta(days=3)


@pytest.fixture
def fleet(db, alice, bob):
    """Three days of hourly samples before NOW: quiet (2 %), busy (10 %), on the line (exactly 5 %), quiet but
    sampled only the last day, and a quiet VM that is stopped now."""
    h = host()
    vms = {
        "quiet": vm(alice, h, name="quiet"), "busy": vm(alice, h, name="busy"), "edge": vm(bob, h, name="edge"),
        "young": vm(bob, h, name="young"), "stopped": vm(alice, h, name="stopped", status="stopped"),
    }
    hourly(vms["quiet"], T0, 72, cpu_pct=2)
    hourly(vms["busy"], T0, 72, cpu_pct=10)
    hourly(vms["edge"], T0, 72, cpu_pct=5)
    hourly(vms["young"], T0 + timedelta(days=2), 24, cpu_pct=1)
    hourly(vms["stopped"], T0, 72, cpu_pct=0)
    return vms


@pytest.mark.django_db
def test_idle_means_below_the_threshold_for_days_with_enough_samples(fleet, admin_user):
    found = idle_vms(actor=admin_user, now=NOW)
    assert [(i.vm.name, i.avg_cpu_pct, i.sampled_hours) for i in found] == [("quiet", 2, 72)]


@pytest.mark.django_db
def test_thresholds_and_window_are_parameters(fleet, admin_user):
    assert [i.vm.name for i in idle_vms(actor=admin_user, now=NOW, cpu_pct=5.01)] == ["quiet", "edge"]
    # One day back: the young VM has samples for all of it now (1 %, the quietest first).
    assert [i.vm.name for i in idle_vms(actor=admin_user, now=NOW, days=1)] == ["young", "quiet"]
    with override_settings(IDLE_CPU_PCT=11):
        assert {i.vm.name for i in idle_vms(actor=admin_user, now=NOW)} == {"quiet", "busy", "edge"}


@pytest.mark.django_db
def test_enough_samples_means_coverage_of_the_window(fleet, admin_user):
    """A gap of more than a fifth of the window (IDLE_MIN_COVERAGE 0.8) leaves the VM unjudged."""
    fleet["quiet"].samples.filter(at__lte=T0 + timedelta(hours=15)).delete()  # 57 of 72 hours left: < 57.6
    assert idle_vms(actor=admin_user, now=NOW) == []
    with override_settings(IDLE_MIN_COVERAGE=0.75):
        assert [i.vm.name for i in idle_vms(actor=admin_user, now=NOW)] == ["quiet"]


@pytest.mark.django_db
def test_only_administrators_see_or_stop_idle_vms(fleet, alice):
    with pytest.raises(PermissionDenied):
        idle_vms(actor=alice, now=NOW)
    with pytest.raises(PermissionDenied):
        idle_vms_stop(actor=alice, via="api", now=NOW)


@pytest.mark.django_db
def test_a_vm_that_is_not_idle_is_left_alone(fleet, admin_user):
    results = idle_vms_stop(actor=admin_user, via="api", vm_ids=[fleet["busy"].pk], now=NOW)
    assert [(r.stopped, r.message) for r in results] == [
        (False, f"VM {fleet['busy'].pk} is not idle (or not running): left alone.")]
    assert VM.objects.get(pk=fleet["busy"].pk).status == "running"
    event = AuditEvent.objects.get(action="report.idle_stop")
    assert event.data["refused"] == [fleet["busy"].pk] and event.data["stopped"] == []


def _quiet_vm_on_test_driver(alice):
    created = vm_services.vm_create(actor=alice, via="cli", name="sleepy", vcpus=1, memory_mib=128, disk_gib=1)
    machine = VM.objects.get(pk=created.vm.pk)
    assert machine.status == VMStatus.RUNNING
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    hourly(machine, now - timedelta(days=3), 72, cpu_pct=0.5)
    return machine


@pytest.mark.django_db(transaction=True)
def test_stop_idle_through_the_api_stops_the_domain_through_its_job(test_host, alice, admin_user):
    """On test:///default, POST /api/reports/idle/stop/: the idle VM's vm.stop job runs and the domain is shut
    off; both the stop and the batch are audited under the administrator, via the API."""
    machine = _quiet_vm_on_test_driver(alice)
    listed = api_client(admin_user).get("/api/reports/idle/").json()
    assert [(r["name"], r["owner"], r["avg_cpu_pct"]) for r in listed["results"]] == [("sleepy", "alice", 0.5)]
    response = api_client(admin_user).post("/api/reports/idle/stop/", {"vms": [machine.pk]}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["stopped"] == 1 and body["results"][0]["message"] == "Stopping sleepy."
    job = Job.objects.get(pk=body["results"][0]["job"])
    assert (job.kind, job.status, job.via) == ("vm.stop", "succeeded", "api")
    machine.refresh_from_db()
    assert machine.status == VMStatus.STOPPED
    assert get_driver("test:///default").domain_info(str(machine.uuid)).state == PowerState.SHUTOFF
    assert AuditEvent.objects.filter(action="vm.stop", actor=admin_user, target_id=str(machine.pk)).exists()
    assert AuditEvent.objects.get(action="report.idle_stop").data["stopped"] == [machine.pk]
    # Stopped now: no longer idle, and asking again leaves it alone.
    assert idle_vms(actor=admin_user) == []


@pytest.mark.django_db(transaction=True)
def test_auto_stop_is_off_by_default_and_stops_as_the_named_admin(test_host, alice, admin_user, monkeypatch):
    machine = _quiet_vm_on_test_driver(alice)
    monkeypatch.setattr(report_services, "_last_auto_stop", None)
    assert idle_auto_stop() is None
    machine.refresh_from_db()
    assert machine.status == VMStatus.RUNNING
    with override_settings(IDLE_AUTO_STOP=True, IDLE_AUTO_STOP_AS=admin_user.username):
        results = idle_auto_stop()
        assert results is not None and [r.vm_id for r in results if r.stopped] == [machine.pk]
        assert idle_auto_stop() is None  # at most every IDLE_AUTO_STOP_EVERY_SECONDS
    machine.refresh_from_db()
    assert machine.status == VMStatus.STOPPED
    assert AuditEvent.objects.get(action="report.idle_stop").via == "system"


@pytest.mark.django_db
def test_stop_judges_idleness_by_the_thresholds_the_list_used(fleet, admin_user):
    """Listed with days=1 (the young VM is idle over one day), stopping with the same days stops it; with the
    default window it would be left alone as 'not idle'."""
    assert [i.vm.name for i in idle_vms(actor=admin_user, now=NOW, days=1)] == ["young", "quiet"]
    young = fleet["young"]
    refused = idle_vms_stop(actor=admin_user, via="api", vm_ids=[young.pk], now=NOW)
    assert [r.stopped for r in refused] == [False]
    results = idle_vms_stop(actor=admin_user, via="api", vm_ids=[young.pk], now=NOW, days=1)
    assert [(r.vm_id, r.name) for r in results] == [(young.pk, "young")]
    assert [(r.stopped, r.message) for r in results] == [(True, "Stopping young.")]
    edge = idle_vms_stop(actor=admin_user, via="api", vm_ids=[fleet["edge"].pk], now=NOW, cpu_pct=5.01)
    assert [(r.name, r.stopped) for r in edge] == [("edge", True)]


@pytest.mark.django_db
def test_api_and_cli_stop_pass_the_thresholds_on(fleet, admin_user, monkeypatch):
    seen: list[tuple] = []

    def record(*, actor, via, vm_ids=None, now=None, cpu_pct=None, days=None):
        seen.append((via, vm_ids, cpu_pct, days))
        return []

    monkeypatch.setattr("reports.api.views.idle_vms_stop", record)
    monkeypatch.setattr("reports.management.commands.report.idle_vms_stop", record)
    response = api_client(admin_user).post("/api/reports/idle/stop/", {"vms": [1], "cpu_pct": 7.5, "days": 0.5},
                                           format="json")
    assert response.status_code == 202, response.content
    bad = api_client(admin_user).post("/api/reports/idle/stop/", {"days": "soon"}, format="json")
    assert bad.status_code == 400 and "days" in bad.json()["errors"]
    call_command("report", "idle", "--stop", "--as", admin_user.username, "--cpu-pct", "3", "--days", "2",
                 stdout=io.StringIO())
    assert seen == [("api", [1], 7.5, 0.5), ("cli", None, 3.0, 2.0)]

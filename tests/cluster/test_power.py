"""The power agent runs real commands (a tiny script writing a file): placeholders, exit codes, timeout, no shell;
fencing and declaring a host down; the hosts API's operations."""

from __future__ import annotations

import stat

import pytest
from django.test import override_settings

from cluster.choices import HostStatus
from cluster.models import Cluster, Host
from cluster.power import (
    OFF,
    host_declare_down,
    host_fence,
    host_power_off,
    host_power_on,
    host_power_status,
    power_agent_run,
    power_command,
)
from portal.choices import Via
from portal.exceptions import Conflict, PermissionDenied, ValidationFailed
from portal.models import AuditEvent

AGENT = """#!/bin/sh
# A stand-in for ipmitool: records its arguments, answers like a BMC.
echo "$*" >> "{log}"
case "$1" in
  off) echo "Chassis Power Control: Down/Off" ;;
  on) echo "Chassis Power Control: Up/On" ;;
  status) exit "$(cat "{state}" 2>/dev/null || echo 0)" ;;
  fail) echo "BMC unreachable" >&2; exit 3 ;;
  slow) sleep 10 ;;
esac
"""


@pytest.fixture
def agent(tmp_path):
    """The agent script and the file it writes its calls to."""
    log, state = tmp_path / "calls.log", tmp_path / "state"
    script = tmp_path / "agent.sh"
    script.write_text(AGENT.format(log=log, state=state))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"script": str(script), "log": log, "state": state}


def gone_host(name: str = "hv1", **fields) -> Host:
    """A host libvirt cannot reach (a test-driver file that does not exist): nothing runs there."""
    cluster, _ = Cluster.objects.get_or_create(name="lab")
    return Host.objects.create(name=name, uri=f"test:///nonexistent/{name}.xml", status=HostStatus.UP,
                               cluster=cluster, **fields)


def calls(agent) -> list[str]:
    return agent["log"].read_text().splitlines() if agent["log"].exists() else []


def test_command_words_get_placeholders_and_never_a_shell(db, agent):
    """{host} and {uri} are replaced inside each shlex word: a host name with shell syntax stays one argument."""
    host = gone_host("a;touch pwned", power_off_command=f"{agent['script']} off --host '{{host}}' --uri={{uri}}")
    assert power_command(host, OFF) == [agent["script"], "off", "--host", "a;touch pwned",
                                        "--uri=test:///nonexistent/a;touch pwned.xml"]
    result = power_agent_run(host=host, action=OFF)
    assert result.ok and "Down/Off" in result.stdout
    assert calls(agent) == ["off --host a;touch pwned --uri=test:///nonexistent/a;touch pwned.xml"]


def test_exit_code_timeout_and_missing_program_are_reported_not_raised(db, agent):
    host = gone_host(power_off_command=f"{agent['script']} fail", power_on_command=f"{agent['script']} slow",
                     power_status_command="/nonexistent/ipmitool status")
    failed = power_agent_run(host=host, action=OFF)
    assert failed.returncode == 3 and not failed.ok and failed.summary() == "exit 3: BMC unreachable"
    slow = power_agent_run(host=host, action="on", timeout=0.5)
    assert slow.timed_out and slow.returncode is None and "timed out" in slow.summary()
    missing = power_agent_run(host=host, action="status")
    assert missing.returncode is None and "cannot run /nonexistent/ipmitool" in missing.summary()
    assert host_power_status(host=host) is None  # could not ask: unknown, not "off"


def test_power_status_follows_the_exit_code(db, agent):
    host = gone_host(power_status_command=f"{agent['script']} status {{host}}")
    agent["state"].write_text("0")
    assert host_power_status(host=host) is True
    agent["state"].write_text("1")
    assert host_power_status(host=host) is False
    assert host_power_status(host=gone_host("hv2")) is None  # no status command


def test_power_off_puts_the_host_on_standby_and_audits_the_output(db, agent, admin_user):
    host = gone_host(power_off_command=f"{agent['script']} off {{host}}", power_on_command=f"{agent['script']} on")
    host_power_off(actor=admin_user, via=Via.ADMIN, host=host, reason="testing")
    host.refresh_from_db()
    assert host.status == HostStatus.STANDBY
    event = AuditEvent.objects.get(action="host.power_off")
    assert event.data["argv"][-2:] == ["off", "hv1"] and event.data["returncode"] == 0
    assert "Down/Off" in event.data["stdout"] and "(testing)" in event.message
    host_power_on(actor=admin_user, via=Via.ADMIN, host=host)
    assert calls(agent) == ["off hv1", "on"]
    host.refresh_from_db()
    assert host.status == HostStatus.STANDBY  # up once the monitor reaches libvirt there, not before


def test_failed_power_command_is_audited_and_refused(db, agent, admin_user):
    host = gone_host(power_off_command=f"{agent['script']} fail")
    with pytest.raises(Conflict, match="power off command of hv1 failed: exit 3: BMC unreachable"):
        host_power_off(actor=admin_user, via=Via.ADMIN, host=host)
    host.refresh_from_db()
    assert host.status == HostStatus.UP
    assert AuditEvent.objects.get(action="host.power_off").outcome == AuditEvent.Outcome.FAILED


def test_power_timeout_comes_from_settings(db, agent, admin_user):
    host = gone_host(power_off_command=f"{agent['script']} slow")
    with override_settings(POWER_AGENT_TIMEOUT_SECONDS=0.5), pytest.raises(Conflict, match="timed out"):
        host_power_off(actor=admin_user, via=Via.ADMIN, host=host)


def test_power_off_is_refused_while_domains_run(test_host, agent, admin_user):
    """libvirt's test driver runs a domain ("test"): powering that host off would kill it."""
    Host.objects.filter(pk=test_host.pk).update(power_off_command=f"{agent['script']} off")
    test_host.refresh_from_db()
    with pytest.raises(Conflict, match="domain\\(s\\) run on testhost: put it into maintenance first"):
        host_power_off(actor=admin_user, via=Via.ADMIN, host=test_host)
    assert calls(agent) == []


def test_fence_runs_the_agent_and_confirms_down(db, agent, admin_user):
    host = gone_host(power_off_command=f"{agent['script']} off {{host}}",
                     power_status_command=f"{agent['script']} status")
    agent["state"].write_text("1")  # the BMC reports it off after the command
    host_fence(actor=admin_user, via=Via.API, host=host)
    host.refresh_from_db()
    assert host.status == HostStatus.DOWN and host.confirmed_down_at is not None
    assert AuditEvent.objects.filter(action="host.fence", outcome=AuditEvent.Outcome.SUCCEEDED).exists()


def test_fence_refused_when_the_host_still_reports_power_on(db, agent, admin_user):
    host = gone_host(power_off_command=f"{agent['script']} off", power_status_command=f"{agent['script']} status")
    agent["state"].write_text("0")
    with pytest.raises(Conflict, match="still reports power on"):
        host_fence(actor=admin_user, via=Via.API, host=host)
    host.refresh_from_db()
    assert host.confirmed_down_at is None


def test_fence_without_agent_says_declare_it_down_instead(db, admin_user):
    with pytest.raises(Conflict, match="declare it down by hand instead"):
        host_fence(actor=admin_user, via=Via.ADMIN, host=gone_host())


def test_declare_down_needs_a_silent_host(test_host, admin_user):
    """A host whose libvirt still answers is not down: declaring it so could run its VMs twice."""
    with pytest.raises(Conflict, match="still answers libvirt"):
        host_declare_down(actor=admin_user, via=Via.ADMIN, host=test_host)
    assert AuditEvent.objects.get(action="host.declare_down").outcome == AuditEvent.Outcome.DENIED
    host = host_declare_down(actor=admin_user, via=Via.ADMIN, host=gone_host())
    assert host.status == HostStatus.DOWN and host.confirmed_down_at is not None


def test_host_refresh_of_a_host_back_up_clears_confirmed_down_and_keeps_standby(test_host, db):
    from django.utils import timezone

    from cluster.services import host_refresh

    Host.objects.filter(pk=test_host.pk).update(status=HostStatus.DOWN, confirmed_down_at=timezone.now())
    test_host.refresh_from_db()
    host_refresh(host=test_host)
    test_host.refresh_from_db()
    assert test_host.status == HostStatus.UP and test_host.confirmed_down_at is None
    asleep = gone_host(status_changed_at=None)
    Host.objects.filter(pk=asleep.pk).update(status=HostStatus.STANDBY)
    asleep.refresh_from_db()
    assert host_refresh(host=asleep).status == HostStatus.STANDBY  # powered off on purpose: not "down"


def test_only_admins(db, alice, agent):
    host = gone_host(power_off_command=f"{agent['script']} off")
    for call in (host_power_off, host_power_on):
        with pytest.raises(PermissionDenied):
            call(actor=alice, via=Via.WEB, host=host)
    with pytest.raises(PermissionDenied):
        host_fence(actor=alice, via=Via.WEB, host=host)
    with pytest.raises(PermissionDenied):
        host_declare_down(actor=alice, via=Via.WEB, host=host)
    assert calls(agent) == []


def test_set_power_agent_checks_the_words_and_audits_what_changed(db, admin_user):
    from cluster.hostconfig import host_configure

    host = gone_host()
    with pytest.raises(ValidationFailed):
        host_configure(actor=admin_user, via=Via.ADMIN, host=host, power_off_command="/usr/bin/ipmitool 'unclosed")
    host_configure(actor=admin_user, via=Via.ADMIN, host=host, power_off_command="/usr/bin/ipmitool -P secret off")
    event = AuditEvent.objects.get(action="host.configure")
    assert "secret" not in event.message and event.data == {"power_off_command": "set"}


# --- the API ------------------------------------------------------------------------------------

def test_api_host_operations(db, client_for, admin_user, alice, agent):
    host = gone_host()
    assert client_for(alice).post(f"/api/hosts/{host.pk}/declare-down/").status_code == 403
    api = client_for(admin_user)
    r = api.post(f"/api/hosts/{host.pk}/fence/")
    assert r.status_code == 409 and "declare it down by hand instead" in r.json()["detail"]
    r = api.post(f"/api/hosts/{host.name}/declare-down/")
    assert r.status_code == 200, r.content
    assert r.json()["host"]["status"] == "down"
    r = api.post("/api/hosts/nosuch/maintenance/")
    assert r.status_code == 404
    r = api.post(f"/api/hosts/{host.pk}/maintenance/")
    assert r.status_code == 409 and "only an up host can go into maintenance" in r.json()["detail"]
    r = api.post(f"/api/hosts/{host.pk}/activate/")
    assert r.status_code == 409 and "not in maintenance" in r.json()["detail"]


def test_api_maintenance_of_an_empty_host_reaches_maintenance(db, client_for, admin_user,
                                                              django_capture_on_commit_callbacks):
    host = gone_host()
    api = client_for(admin_user)
    with django_capture_on_commit_callbacks(execute=True):  # the job runs (ImmediateBackend) on commit
        r = api.post(f"/api/hosts/{host.pk}/maintenance/", {"stop_unmovable": False}, format="json")
    assert r.status_code == 202, r.content
    assert r.json()["job"]["kind"] == "host.maintenance"
    host.refresh_from_db()
    assert host.status == HostStatus.MAINTENANCE
    r = api.post(f"/api/hosts/{host.pk}/maintenance/")
    assert r.status_code == 200 and "already in maintenance" in r.json()["message"]
    r = api.post(f"/api/hosts/{host.pk}/activate/")
    assert r.status_code == 200 and r.json()["host"]["status"] == "up"


# --- the admin ----------------------------------------------------------------------------------

def _action(admin_client, action: str, host: Host, **extra):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
    from django.urls import reverse

    return admin_client.post(reverse("admin:cluster_host_changelist"),
                             {"action": action, ACTION_CHECKBOX_NAME: [host.pk], **extra}, follow=True)


def test_admin_declare_down_asks_first_then_calls_the_service(admin_client, db):
    host = gone_host()
    page = _action(admin_client, "declare_down", host)
    text = page.content.decode()
    assert "Do you confirm these hosts are powered off?" in text and "only confirm what you checked" in text
    host.refresh_from_db()
    assert host.confirmed_down_at is None  # nothing happened yet
    page = _action(admin_client, "declare_down", host, post="yes")
    assert "v1 is declared down: no VM was running there." in page.content.decode()  # (the message starts capitalised)
    host.refresh_from_db()
    assert host.confirmed_down_at is not None
    assert AuditEvent.objects.get(action="host.declare_down").via == Via.ADMIN


def test_admin_fence_without_agent_and_power_agent_fields(admin_client, db, agent):
    from django.urls import reverse

    host = gone_host()
    page = _action(admin_client, "fence", host, post="yes")
    assert "declare it down by hand instead" in page.content.decode()
    data = {"name": host.name, "enabled": "on", "domain_type": host.domain_type,
            "cluster": host.cluster_id or "", "tags": "", "migration_uri": "", "display_address": "",
            "max_jobs": host.max_jobs,
            "power_off_command": f"{agent['script']} off {{host}}", "power_on_command": "",
            "power_status_command": ""}
    response = admin_client.post(reverse("admin:cluster_host_change", args=[host.pk]), data, follow=True)
    assert response.status_code == 200
    host.refresh_from_db()
    assert host.power_off_command.endswith("off {host}")
    assert AuditEvent.objects.get(action="host.configure").via == Via.ADMIN
    page = _action(admin_client, "power_off", host, post="yes")
    assert "Powered off hv1" in page.content.decode() and calls(agent) == ["off hv1"]


def test_admin_start_maintenance_and_activate(admin_client, db, django_capture_on_commit_callbacks):
    host = gone_host()
    page = _action(admin_client, "start_maintenance", host)
    assert "Shut down the VMs that cannot be live-migrated away" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        _action(admin_client, "start_maintenance", host, post="yes")
    host.refresh_from_db()
    assert host.status == HostStatus.MAINTENANCE
    page = _action(admin_client, "activate", host)
    assert "v1 is active again." in page.content.decode()


def test_admin_declare_down_counts_the_vms_last_seen_running_on_a_silent_host(admin_client, db, django_user_model):
    from vms.models import VM

    host = gone_host()
    Host.objects.filter(pk=host.pk).update(status=HostStatus.NON_RESPONSIVE)
    owner = django_user_model.objects.create_user("carol", password="x")
    VM.objects.create(name="db1", owner=owner, host=host, vcpus=1, memory_mib=64, disk_gib=1, status="unknown",
                      known_status="running", highly_available=True)
    VM.objects.create(name="off1", owner=owner, host=host, vcpus=1, memory_mib=64, disk_gib=1, status="unknown",
                      known_status="stopped")
    text = _action(admin_client, "declare_down", host).content.decode()
    assert "1 VM(s) running when last seen (1 now unknown), 1 highly available" in text  # not "no VM running"

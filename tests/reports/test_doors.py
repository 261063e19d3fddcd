"""The reports' doors: REST API (JSON and CSV, 403 JSON for non-admins, 400 JSON for bad dates), the admin pages
(period picker, chart, CSV, idle VMs with stop), and `manage.py report`."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from portal.models import AuditEvent
from tests.support import api_client, web_client

from .fixtures import T0, host, hourly, vm

pytestmark = pytest.mark.django_db

PERIOD = "from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z"


@pytest.fixture
def usage(alice, bob):
    """alice: 10 h of a 2-vCPU VM; bob: 4 half hours of a 1-vCPU VM in group '=lab' (a name a spreadsheet would run)."""
    h = host()
    lab = Group.objects.create(name="=lab")
    hourly(vm(alice, h, name="a1"), T0, 10)
    hourly(vm(bob, h, name="b1", vcpus=1, memory_mib=1024, disk_gib=5, group=lab), T0, 4, seconds=1800)
    return h


def _csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def test_api_usage_per_user_in_json(usage, admin_user):
    response = api_client(admin_user).get(f"/api/reports/usage/?{PERIOD}&by=user")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["by"] == "user" and body["totals"] == {"vm_hours": 12, "vcpu_hours": 22, "memory_gib_hours": 22,
                                                       "disk_gib_hours": 110}
    first = body["results"][0]
    assert (first["subject"], first["vm_hours"], first["vcpu_hours"], first["peak_vcpus"], first["limit_vcpus"]) == (
        "alice", 10, 20, 2, 4)
    assert [r["subject"] for r in body["results"]] == ["alice", "bob"]


def test_api_usage_csv_by_format_and_by_accept(usage, admin_user):
    client = api_client(admin_user)
    by_format = client.get(f"/api/reports/usage/?{PERIOD}&by=group&format=csv")
    assert by_format.status_code == 200 and by_format["Content-Type"].startswith("text/csv")
    assert 'filename="usage-group-' in by_format["Content-Disposition"]
    rows = _csv_rows(by_format.content)
    assert [(r["subject"], r["vm_hours"], r["vcpu_hours"], r["disk_gib_hours"]) for r in rows] == [
        ("'=lab", "2.0", "2.0", "10.0")]  # the formula-looking name is quoted for spreadsheets
    by_accept = client.get(f"/api/reports/usage/?{PERIOD}&by=user", HTTP_ACCEPT="text/csv")
    assert by_accept["Content-Type"].startswith("text/csv")
    lines = by_accept.content.decode().splitlines()
    assert lines[0].startswith("subject,vms,vm_hours,vcpu_hours,memory_gib_hours,disk_gib_hours,avg_cpu_pct,peak_vms")
    assert lines[1].startswith("alice,1,10.0,20.0,20.0,100.0,50.0,1.0,3")


def test_api_refuses_non_admins_with_json_403_even_for_csv(usage, alice):
    client = api_client(alice)
    for path in (f"/api/reports/usage/?{PERIOD}", f"/api/reports/usage/?{PERIOD}&format=csv", "/api/reports/idle/"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["code"] == "forbidden" and "Only administrators" in response.json()["detail"]
    response = client.post("/api/reports/idle/stop/", {}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


def test_api_bad_dates_and_by_are_400_json(admin_user):
    client = api_client(admin_user)
    response = client.get("/api/reports/usage/?from=last-tuesday&format=csv")
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "invalid" and "'from' must be a date" in response.json()["detail"]
    assert client.get("/api/reports/usage/?from=2026-11-03&to=2026-11-01").json()["detail"] == \
        "'to' must be after 'from'."
    assert "'by' must be one of" in client.get("/api/reports/usage/?by=planet").json()["detail"]
    for top in ("-1", "²", "9" * 50):
        assert client.get(f"/api/reports/usage/?top={top}").status_code == 400, top
    assert client.get("/api/reports/idle/?days=many").status_code == 400


def test_api_anonymous_is_refused(client):
    assert client.get("/api/reports/usage/").status_code in (401, 403)


def test_api_idle_list_and_stop_refusal(usage, admin_user):
    client = api_client(admin_user)
    quiet = vm(admin_user, usage, name="quiet")
    hourly(quiet, T0, 72, cpu_pct=1)
    body = client.get("/api/reports/idle/?days=3").json()
    # The window ends now, long after the fixtures' clock: nothing has samples enough.
    assert body == {"count": 0, "results": []}
    response = client.post("/api/reports/idle/stop/", {"vms": [quiet.pk]}, format="json")
    assert response.status_code == 202
    assert response.json()["results"][0]["stopped"] is False
    assert client.post("/api/reports/idle/stop/", {"vms": ["x"]}, format="json").status_code == 400


def test_admin_usage_page_period_picker_chart_and_csv(usage, admin_user):
    client = web_client(admin_user)
    page = client.get("/admin/reports/usage/?start=2026-11-02&end=2026-11-02&by=user")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "alice: 20.0 vCPU-hours" in html and 'id="usage-rows"' in html
    assert "20.00" in html and "2.0 / 4 (50%)" in html  # alice's peak vCPUs against her quota
    download = client.get("/admin/reports/usage/?start=2026-11-02&end=2026-11-02&by=host&format=csv")
    assert download["Content-Type"].startswith("text/csv")
    assert [(r["subject"], r["vm_hours"], r["limit_vcpus"]) for r in _csv_rows(download.content)] == [
        ("rep-host", "12.0", "16")]
    bad = client.get("/admin/reports/usage/?start=31.12.2026")
    assert bad.status_code == 400 and "must be a date" in bad.content.decode()
    index = client.get("/admin/").content.decode()
    assert "/admin/reports/usage/" in index and "/admin/reports/idle/" in index


def test_admin_pages_are_staff_only(usage, alice):
    client = web_client(alice)
    for path in ("/admin/reports/usage/", "/admin/reports/idle/"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_idle_page_lists_and_refuses_to_stop_a_busy_vm(usage, admin_user):
    client = web_client(admin_user)
    page = client.get("/admin/reports/idle/")
    assert page.status_code == 200 and "No VM is idle." in page.content.decode()
    busy = vm(admin_user, usage, name="busy")
    response = client.post("/admin/reports/idle/", {"one": busy.pk}, follow=True)
    assert "is not idle (or not running): left alone." in response.content.decode()
    assert AuditEvent.objects.get(action="report.idle_stop").via == "admin"
    assert client.get("/admin/reports/idle/?format=csv").content.decode().startswith("vm,name,owner,group,host")


def test_cli_usage_table_and_csv(usage, capsys):
    call_command("report", "usage", "--by", "user", "--from", "2026-11-02", "--to", "2026-11-02")
    out = capsys.readouterr().out
    assert "Usage by user, 2026-11-02 00:00 to 2026-11-03 00:00" in out
    assert "Total: 12.00 VM-hours, 22.00 vCPU-hours" in out
    assert any(line.split()[:4] == ["alice", "1", "10.0", "20.0"] for line in out.splitlines())
    call_command("report", "usage", "--by", "user", "--from", "2026-11-02", "--to", "2026-11-02", "--format", "csv",
                 "--top", "1")
    rows = _csv_rows(capsys.readouterr().out.encode())
    assert [(r["subject"], r["vcpu_hours"]) for r in rows] == [("alice", "20.0")]


def test_cli_errors_and_idle(usage, admin_user, capsys):
    with pytest.raises(CommandError, match="'from' must be a date"):
        call_command("report", "usage", "--from", "soon")
    with pytest.raises(CommandError, match="--stop needs --as"):
        call_command("report", "idle", "--stop")
    call_command("report", "idle")
    assert "0 idle VM(s)." in capsys.readouterr().out
    call_command("report", "idle", "--stop", "--as", admin_user.username, "--vm", "999999")
    assert "left alone: VM 999999 is not idle" in capsys.readouterr().out

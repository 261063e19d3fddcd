"""The metrics endpoints (issue #14 part 2): a VM's samples for whoever may see the VM (others: 404 like
a missing VM), a host's for administrators, JSON 400 for a bad range, a constant number of queries
whatever the number of points, and the VM page's Monitoring panel and the host admin page's charts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import HostSample, Resolution, VMSample
from tests.support import api_client, web_client
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(test_host, alice):
    return VM.objects.create(owner=alice, host=test_host, name="watched", vcpus=1, memory_mib=256, disk_gib=1,
                             status=VMStatus.RUNNING)


def samples(vm, count: int, resolution: str = Resolution.RAW, step: int = 30) -> None:
    now = timezone.now()
    VMSample.objects.bulk_create([
        VMSample(vm=vm, host=vm.host, resolution=resolution, at=now - timedelta(seconds=step * i), seconds=step,
                 cpu_pct=i % 100, vcpus=1, memory_mib=256, disk_gib=1, mem_used_bytes=1000 * i, net_rx_bps=i)
        for i in range(count)])


def test_the_owner_reads_the_last_hour_oldest_first(vm, alice):
    samples(vm, 150)  # 75 minutes of raw samples: the last hour is 120 of them
    body = api_client(alice).get(f"/api/vms/{vm.pk}/metrics/").json()
    assert body["range"] == "1h" and body["resolution"] == "raw" and body["step_seconds"] == 30
    points = body["points"]
    assert len(points) == 120
    assert points == sorted(points, key=lambda p: p["t"])
    assert set(points[0]) == {"t", "cpu_pct", "mem_used_bytes", "memory_bytes", "disk_read_bps", "disk_write_bps",
                              "net_rx_bps", "net_tx_bps"}
    assert points[-1]["cpu_pct"] == 0 and points[-1]["memory_bytes"] == 256 * 1024**2


def test_day_and_week_read_the_coarser_rows(vm, alice):
    samples(vm, 10)
    samples(vm, 300, Resolution.FIVE_MIN, step=300)
    samples(vm, 200, Resolution.HOUR, step=3600)
    client = api_client(alice)
    day = client.get(f"/api/vms/{vm.pk}/metrics/?range=1d").json()
    week = client.get(f"/api/vms/{vm.pk}/metrics/?range=1w").json()
    assert (day["resolution"], len(day["points"]), day["step_seconds"]) == ("5m", 288, 300)
    assert (week["resolution"], len(week["points"]), week["step_seconds"]) == ("1h", 168, 3600)


def test_a_bad_range_is_a_json_400(vm, alice):
    response = api_client(alice).get(f"/api/vms/{vm.pk}/metrics/?range=1y")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert "range" in response.json()["errors"]


def test_others_vms_are_not_found_and_admins_see_all(vm, bob, admin_user):
    samples(vm, 3)
    missing = api_client(bob).get(f"/api/vms/{vm.pk}/metrics/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert api_client(bob).get("/api/vms/999999/metrics/").json()["code"] == "not_found"
    assert len(api_client(admin_user).get(f"/api/vms/{vm.pk}/metrics/").json()["points"]) == 3
    assert api_client(None).get(f"/api/vms/{vm.pk}/metrics/").status_code in (401, 403)


def test_the_query_count_does_not_grow_with_the_points(vm, alice):
    client = api_client(alice)
    samples(vm, 5)
    with CaptureQueriesContext(connection) as few:
        client.get(f"/api/vms/{vm.pk}/metrics/")
    VMSample.objects.all().delete()
    samples(vm, 110)
    with CaptureQueriesContext(connection) as many:
        assert len(client.get(f"/api/vms/{vm.pk}/metrics/").json()["points"]) == 110
    assert len(few.captured_queries) == len(many.captured_queries)


def test_host_metrics_are_for_administrators(test_host, alice, admin_user):
    HostSample.objects.create(host=test_host, at=timezone.now(), seconds=30, cpu_pct=12.5, mem_total_bytes=8,
                              mem_used_bytes=4, running_domains=2)
    assert api_client(alice).get(f"/api/hosts/{test_host.pk}/metrics/").status_code == 403
    body = api_client(admin_user).get(f"/api/hosts/{test_host.pk}/metrics/").json()
    assert body["points"][0]["cpu_pct"] == 12.5 and body["points"][0]["running_domains"] == 2
    assert api_client(admin_user).get("/api/hosts/987654/metrics/").status_code == 404
    assert api_client(admin_user).get(f"/api/hosts/{test_host.pk}/metrics/?range=x").status_code == 400


def test_the_openapi_schema_documents_the_endpoints(admin_user):
    schema = api_client(admin_user).get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/vms/{vm_id}/metrics/" in schema and "/api/hosts/{host_id}/metrics/" in schema


def test_the_vm_page_has_the_monitoring_panel_and_the_host_admin_page_its_charts(vm, alice, admin_user, test_host):
    page = web_client(alice).get(f"/vms/{vm.pk}/").content.decode()
    assert 'id="monitoring"' in page and f'data-live-watch-vm="{vm.pk}"' in page
    assert f'data-metrics-url="/api/vms/{vm.pk}/metrics/"' in page and "uPlot.iife.min.js" in page
    admin_page = web_client(admin_user).get(f"/admin/cluster/host/{test_host.pk}/change/").content.decode()
    assert f'data-metrics-url="/api/hosts/{test_host.pk}/metrics/"' in admin_page

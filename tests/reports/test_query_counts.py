"""Reports cost a constant number of queries however many VMs there are (like tests/test_query_counts.py): every
report door read with 10 VMs and again with 1,000, each VM with samples at every resolution, edges included."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import VMSample
from tests.scale import scale_world
from tests.support import api_client, web_client
from tests.test_query_counts import LARGE, SMALL, _assert_constant
from vms.models import VM

from .fixtures import T0

pytestmark = pytest.mark.django_db

M, H = timedelta(minutes=1), timedelta(hours=1)
PERIOD = "from=2026-11-01T23:13:00Z&to=2026-11-02T03:01:00Z"  # straddles 5-minute rows, whole hours, raw samples


class SampledWorld:
    """tests.scale's world, whose VMs get samples as it grows: 5-minute rows before T0, three hourly rows, raw
    samples after; the running ones also twelve quiet hours up to now (idle candidates)."""

    def __init__(self) -> None:
        self.world = scale_world("rep")
        self.sampled: set[int] = set()
        self.now = timezone.now().replace(minute=0, second=0, microsecond=0)

    def grow(self, total: int) -> None:
        self.world.grow(total)
        rows = []
        for machine in VM.objects.filter(pk__in=set(self.world.vm_ids) - self.sampled):
            common = {"vm_id": machine.pk, "host_id": machine.host_id, "vcpus": machine.vcpus,
                      "memory_mib": machine.memory_mib, "disk_gib": machine.disk_gib, "cpu_pct": 3.0}
            rows += [VMSample(resolution="5m", at=T0 - 55 * M + 5 * i * M, seconds=300, **common) for i in range(12)]
            rows += [VMSample(resolution="1h", at=T0 + (i + 1) * H, seconds=3600, **common) for i in range(3)]
            rows += [VMSample(resolution="raw", at=T0 + 3 * H + 10 * (i + 1) * timedelta(seconds=1), seconds=10,
                              **common) for i in range(12)]
            if machine.status == "running":
                rows += [VMSample(resolution="1h", at=self.now - i * H, seconds=3600, **common) for i in range(12)]
            self.sampled.add(machine.pk)
        VMSample.objects.bulk_create(rows, batch_size=5000)


@pytest.fixture
def world():
    world = SampledWorld()
    world.grow(SMALL)
    return world


def test_report_api_reads_cost_the_same_at_10_and_1000_vms(world):
    paths = [f"/api/reports/usage/?{PERIOD}&by={by}" for by in ("user", "group", "host")]
    paths += [f"/api/reports/usage/?{PERIOD}&by=user&format=csv", "/api/reports/idle/?days=0.5",
              "/api/reports/idle/?days=0.5&format=csv"]
    _assert_constant(world, api_client(world.world.admin), paths)
    response = api_client(world.world.admin).get(f"/api/reports/usage/?{PERIOD}&by=user")
    # 23:13 to 03:01 = 3 h 48 min for each of the LARGE VMs, all of the world's owner's
    assert response.json()["results"][0]["vm_hours"] == pytest.approx(LARGE * (3 + 48 / 60), abs=0.01)
    idle = api_client(world.world.admin).get("/api/reports/idle/?days=0.5").json()
    assert idle["count"] == sum(1 for i in range(LARGE) if i % 3 == 0)  # the running third


def test_report_admin_pages_cost_the_same_at_10_and_1000_vms(world):
    paths = [f"/admin/reports/usage/?start=2026-11-01&end=2026-11-02&by={by}" for by in ("user", "group", "host")]
    paths += ["/admin/reports/idle/"]
    _assert_constant(world, web_client(world.world.admin), paths)

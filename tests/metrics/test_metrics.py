"""`/metrics` (issue #14 part 4): token-protected, Prometheus' text format parsed with prometheus_client's own
parser, values from known rows (jobs, consoles, VMs, hosts, the collector's latest raw samples), the
request-duration histogram counting requests through both middleware paths, and a scrape costing the same
number of queries at 10 and at 1,000 VMs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from cluster.models import Host
from consoles.models import ConsoleSession
from monitoring.models import HostSample, Resolution, VMSample
from portal.models import Job
from tests.scale import scale_world
from vms.models import VM

pytestmark = pytest.mark.django_db

TOKEN = "m" * 40
GIB = 1024**3


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN
    return settings


def _scrape(client: Client | None = None, token: str = TOKEN, scheme: str = "Bearer"):
    return (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"{scheme} {token}")


def _families(response) -> dict:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def _values(family, **match) -> dict[tuple, float]:
    """{label values in the family's label order: value} of the samples named like the family."""
    return {tuple(s.labels.values()): s.value for s in family.samples
            if s.name == family.name and all(s.labels.get(k) == v for k, v in match.items())}


def _sample(family, **labels) -> float:
    found = [s.value for s in family.samples if s.name == family.name and s.labels == labels]
    assert len(found) == 1, (labels, family.samples[:5])
    return found[0]


# --- who may read -----------------------------------------------------------------------------------


def test_metrics_do_not_exist_while_no_token_is_configured(settings, admin_user):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    assert _scrape(token="").status_code == 404
    # Not even a staff API token opens them: the endpoint is off.
    assert _scrape(token=Token.objects.create(user=admin_user).key, scheme="Token").status_code == 404


def test_no_token_is_asked_for_and_a_wrong_token_is_refused(metrics_on, alice):
    missing = Client().get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"vmportal_" not in missing.content
    for header in (f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer"):
        refused = Client().get("/metrics", HTTP_AUTHORIZATION=header)
        assert refused.status_code in (401, 403), header
        assert b"vmportal_" not in refused.content, header
    assert _scrape(token=TOKEN + "x").status_code == 403
    # Nothing that cannot be an API key reaches the database (and nothing odd makes a 500).
    for odd in ("x" * 5000, "é" * 40, "a'b\"c;--" * 5, "%00" * 20):
        with CaptureQueriesContext(connection) as ctx:
            assert _scrape(token=odd).status_code == 403, odd[:20]
        assert not [q for q in ctx.captured_queries if "authtoken" in q["sql"]], odd[:20]
    # A user's own API token (not staff) is not a metrics token, however it is sent.
    key = Token.objects.create(user=alice).key
    assert _scrape(token=key, scheme="Token").status_code == 403
    assert _scrape(token=key).status_code == 403


def test_the_metrics_token_and_a_staff_api_token_are_accepted(metrics_on, admin_user):
    assert "vmportal_jobs" in _families(_scrape())
    key = Token.objects.create(user=admin_user).key
    assert "vmportal_vms" in _families(_scrape(token=key, scheme="Token"))
    assert "vmportal_vms" in _families(_scrape(token=key, scheme="Bearer"))
    admin_user.is_active = False
    admin_user.save()
    assert _scrape(token=key, scheme="Token").status_code == 403


def test_openmetrics_is_served_when_the_scraper_asks_for_it(metrics_on):
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
                            HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_the_deploy_check_warns_of_a_short_metrics_token(settings):
    from metrics.checks import metrics_token_check

    settings.METRICS_TOKEN = "short"
    assert [w.id for w in metrics_token_check(None)] == ["metrics.W001"]
    settings.METRICS_TOKEN = TOKEN
    assert metrics_token_check(None) == []


# --- what they say ----------------------------------------------------------------------------------


@pytest.fixture
def fleet(alice, bob):
    """Two hosts, three VMs (one deleted), jobs in several states, console sessions, raw samples."""
    now = timezone.now()
    h1 = Host.objects.create(name="hv-1", uri="test:///hv-1", status="up", cpus=8, memory_mib=16384)
    h2 = Host.objects.create(name="hv-2", uri="test:///hv-2", status="non_responsive")
    web = VM.objects.create(name="web", owner=alice, host=h1, vcpus=2, memory_mib=2048, disk_gib=10,
                            status="running")
    db = VM.objects.create(name="db", owner=bob, host=h1, vcpus=4, memory_mib=4096, disk_gib=20, status="stopped")
    gone = VM.objects.create(name="gone", owner=bob, host=h1, vcpus=1, memory_mib=512, disk_gib=1, status="deleted")

    Job.objects.bulk_create([Job(kind="vm.start", status="succeeded"), Job(kind="vm.start", status="succeeded"),
                             Job(kind="vm.start", status="failed"), Job(kind="vm.create", status="pending"),
                             Job(kind="vm.create", status="pending"), Job(kind="vm.create", status="running")])
    Job.objects.filter(kind="vm.create", status="pending").update(created_at=now - timedelta(seconds=600))
    Job.objects.filter(kind="vm.create", status="pending").order_by("pk").first()  # (both are 600 s old)

    ConsoleSession.objects.create(user=alice, vm=web, kind="serial", tier="channels")  # open
    ConsoleSession.objects.create(user=alice, vm=web, kind="screen", tier="channels")  # open
    ConsoleSession.objects.create(user=bob, vm=web, kind="screen", tier="channels", closed_at=now)  # closed
    ConsoleSession.objects.create(user=bob, vm=web, kind="screen", tier="channels",
                                  last_seen_at=now - timedelta(hours=1))  # its relay died: not open

    # web: an older sample, then the latest one on hv-2 (it moved); db: only a sample too old to export.
    VMSample.objects.create(vm=web, host=h1, at=now - timedelta(seconds=120), cpu_pct=90, vcpus=2, memory_mib=2048)
    VMSample.objects.create(vm=web, host=h2, at=now - timedelta(seconds=20), cpu_pct=50, vcpus=2, memory_mib=2048,
                            mem_used_bytes=GIB, disk_read_bps=1000, disk_write_bps=2000, net_rx_bps=300,
                            net_tx_bps=400)
    VMSample.objects.create(vm=web, resolution=Resolution.FIVE_MIN, at=now, cpu_pct=7, vcpus=2, memory_mib=2048)
    VMSample.objects.create(vm=db, host=h1, at=now - timedelta(hours=2), cpu_pct=10, vcpus=4, memory_mib=4096)
    VMSample.objects.create(vm=gone, host=h1, at=now - timedelta(seconds=10), cpu_pct=10, vcpus=1, memory_mib=512)
    HostSample.objects.create(host=h1, at=now - timedelta(seconds=80), cpu_pct=10, mem_used_bytes=GIB,
                              mem_total_bytes=16 * GIB, running_domains=1)
    HostSample.objects.create(host=h1, at=now - timedelta(seconds=15), cpu_pct=25, mem_used_bytes=3 * GIB,
                              mem_total_bytes=16 * GIB, running_domains=2, net_rx_bps=5.5)
    HostSample.objects.create(host=h2, at=now - timedelta(days=1), cpu_pct=99, mem_used_bytes=GIB,
                              mem_total_bytes=GIB, running_domains=9)
    return {"web": web, "db": db, "h1": h1, "h2": h2, "now": now}


def test_portal_gauges_from_known_rows(metrics_on, fleet):
    families = _families(_scrape())

    jobs = families["vmportal_jobs"]
    assert jobs.type == "gauge"
    assert _values(jobs, kind="vm.start") == {
        ("vm.start", "pending"): 0, ("vm.start", "running"): 0, ("vm.start", "succeeded"): 2,
        ("vm.start", "failed"): 1, ("vm.start", "errored"): 0, ("vm.start", "cancelled"): 0}
    assert _sample(jobs, kind="vm.create", status="pending") == 2
    assert _sample(jobs, kind="vm.create", status="running") == 1

    assert _sample(families["vmportal_job_queue_depth"]) == 2
    age = _sample(families["vmportal_job_queue_oldest_age_seconds"])
    assert 600 <= age < 700

    sessions = families["vmportal_console_sessions_open"]
    assert _values(sessions) == {("screen",): 1, ("serial",): 1}

    vms = _values(families["vmportal_vms"])
    assert vms[("running",)] == 1 and vms[("stopped",)] == 1 and vms[("error",)] == 0
    assert ("deleted",) not in vms
    hosts = _values(families["vmportal_hosts"])
    assert hosts[("up",)] == 1 and hosts[("non_responsive",)] == 1 and hosts[("maintenance",)] == 0


def test_host_gauges_are_the_latest_raw_sample_and_stale_hosts_drop_out(metrics_on, fleet):
    families = _families(_scrape())
    assert _values(families["vmportal_host_cpu_usage_ratio"]) == {("hv-1",): 0.25}  # hv-2's sample is a day old
    assert _sample(families["vmportal_host_memory_used_bytes"], host="hv-1") == 3 * GIB
    assert _sample(families["vmportal_host_memory_total_bytes"], host="hv-1") == 16 * GIB
    assert _sample(families["vmportal_host_running_domains"], host="hv-1") == 2
    assert _sample(families["vmportal_host_network_receive_bytes_per_second"], host="hv-1") == 5.5
    at = _sample(families["vmportal_host_sample_timestamp_seconds"], host="hv-1")
    assert abs(at - (fleet["now"] - timedelta(seconds=15)).timestamp()) < 0.01


def test_vm_gauges_carry_name_id_owner_and_host_labels(metrics_on, fleet):
    families = _families(_scrape())
    web = {"vm": "web", "vm_id": str(fleet["web"].pk), "owner": "alice", "host": "hv-2"}
    cpu = families["vmportal_vm_cpu_usage_ratio"]
    assert cpu.type == "gauge"
    # Only web: db's sample is too old, the deleted VM is not reported, the 5-minute row is not raw.
    assert [s.labels for s in cpu.samples] == [web]
    assert _sample(cpu, **web) == 0.5
    assert _sample(families["vmportal_vm_vcpus"], **web) == 2
    assert _sample(families["vmportal_vm_memory_bytes"], **web) == 2 * GIB
    assert _sample(families["vmportal_vm_memory_used_bytes"], **web) == GIB
    assert _sample(families["vmportal_vm_disk_read_bytes_per_second"], **web) == 1000
    assert _sample(families["vmportal_vm_disk_write_bytes_per_second"], **web) == 2000
    assert _sample(families["vmportal_vm_network_receive_bytes_per_second"], **web) == 300
    assert _sample(families["vmportal_vm_network_transmit_bytes_per_second"], **web) == 400


def test_a_stopped_vm_drops_out_at_once(metrics_on, fleet):
    """Its last sample is seconds old, but the VM is stopped: no CPU or throughput reported for it."""
    VM.objects.filter(pk=fleet["web"].pk).update(status="stopped")
    families = _families(_scrape())
    assert families["vmportal_vm_cpu_usage_ratio"].samples == []
    assert families["vmportal_vm_vcpus"].samples == []


def test_every_name_follows_the_conventions(metrics_on, fleet):
    Client().get("/healthz")
    families = _families(_scrape())
    assert families, "no metrics"
    for name, family in families.items():
        assert name.startswith("vmportal_"), name
        assert family.documentation, name
        if family.type == "counter":
            assert any(s.name == f"{name}_total" for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
        assert "percent" not in name  # fractions are _ratio (0-1)


# --- request durations ------------------------------------------------------------------------------


def _healthz_count(family, status_class: str = "2xx") -> float:
    return sum(s.value for s in family.samples if s.name.endswith("_count") and s.labels == {
        "view": "healthz", "method": "GET", "status_class": status_class})


def test_the_request_duration_histogram_counts_requests(metrics_on):
    name = "vmportal_http_request_duration_seconds"
    before = _healthz_count(_families(_scrape())[name])
    for _ in range(3):
        assert Client().get("/healthz").status_code == 200
    Client().get("/no-such-page-at-all/")
    Client().post("/healthz")  # 405: another status class
    family = _families(_scrape())[name]
    assert family.type == "histogram"
    assert _healthz_count(family) == before + 3
    assert sum(s.value for s in family.samples if s.name.endswith("_count")
               and s.labels.get("view") == "healthz" and s.labels.get("method") == "POST") >= 1
    assert any(s.labels.get("view") == "unmatched" and s.labels.get("status_class") == "4xx"
               for s in family.samples)
    # Buckets are cumulative up to +Inf, which equals the count.
    inf = [s.value for s in family.samples if s.name.endswith("_bucket") and s.labels.get("le") == "+Inf"
           and s.labels.get("view") == "healthz" and s.labels.get("method") == "GET"
           and s.labels.get("status_class") == "2xx"]
    assert inf == [before + 3]


async def test_the_histogram_counts_requests_on_the_async_path_too(metrics_on):
    name = "vmportal_http_request_duration_seconds"
    client = AsyncClient()

    async def count() -> float:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        return _healthz_count(_families(response)[name])

    before = await count()
    for _ in range(2):
        assert (await client.get("/healthz")).status_code == 200
    assert await count() == before + 2
    # The view read the database from asgiref's thread, on a connection of its own: close it, or the test
    # database cannot be dropped at the end.
    await sync_to_async(connections.close_all)()


# --- cost -------------------------------------------------------------------------------------------


def _sample_every_vm(world) -> None:
    at = timezone.now()
    known = set(VMSample.objects.values_list("vm_id", flat=True))
    VMSample.objects.bulk_create(
        [VMSample(vm_id=vm_id, host=world.host, at=at - timedelta(seconds=s), cpu_pct=12.5, vcpus=1,
                  memory_mib=512) for vm_id in world.vm_ids if vm_id not in known for s in (5, 65)])


def test_a_scrape_costs_the_same_queries_at_10_and_1000_vms(metrics_on):
    world = scale_world("metrics")
    world.grow(10)
    _sample_every_vm(world)
    HostSample.objects.create(host=world.host, at=timezone.now(), cpu_pct=1, running_domains=10)
    _scrape()  # warm-up

    def scrape() -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as ctx:
            families = _families(_scrape())
        return len(ctx.captured_queries), families

    def reported() -> int:  # the world's stopped VMs have samples too, but a stopped VM is not reported
        return VM.objects.exclude(status__in=["stopped", "deleted"]).count()

    small, families = scrape()
    assert len(families["vmportal_vm_cpu_usage_ratio"].samples) == reported() > 0
    world.grow(1_000)
    _sample_every_vm(world)
    large, families = scrape()
    assert len(families["vmportal_vm_cpu_usage_ratio"].samples) == reported() > 500
    assert {s.value for s in families["vmportal_vm_cpu_usage_ratio"].samples} == {0.125}
    assert small == large == 7, (small, large)

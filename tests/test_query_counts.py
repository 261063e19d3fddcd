"""Reads cost a constant number of queries however many VMs there are (issue #13, part 1).

Each test reads every page of one door with 10 VMs and again with 1,000 (rows made with bulk_create only,
tests/scale.py) and expects the same number of queries: a serializer, template or admin column that asks the
database once per row (an N+1) shows up as a difference, named with the page it happened on.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.scale import scale_world
from tests.support import api_client, web_client
from vms.consumers import live_state

pytestmark = pytest.mark.django_db

SMALL, LARGE = 10, 1_000


@pytest.fixture
def world():
    world = scale_world()
    world.grow(SMALL)
    return world


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.content[:300]!r}"
    return len(ctx.captured_queries)


def _assert_constant(world, client, paths: list[str]) -> None:
    """Every path answers with as many queries at LARGE VMs as at SMALL (after one warm-up read each)."""
    for path in paths:
        client.get(path)  # warm caches that fill once per process (content types, permissions)
    small = {path: _queries(client, path) for path in paths}
    world.grow(LARGE)
    large = {path: _queries(client, path) for path in paths}
    grew = {path: f"{small[path]} -> {large[path]}" for path in paths if small[path] != large[path]}
    assert not grew, f"queries grew with the number of VMs ({SMALL} -> {LARGE}): {grew}"
    assert all(n > 0 for n in large.values())  # the reads did reach the database


def _api_paths(world) -> list[str]:
    vm = world.vm_ids[1]  # shared with the group: every user of the world sees it
    return ["/api/vms/", "/api/vms/?status=running", "/api/vms/?search=vm-0", "/api/vms/?pagination=cursor",
            f"/api/vms/{vm}/", f"/api/vms/{vm}/jobs/", f"/api/vms/{vm}/events/", f"/api/vms/{vm}/nics/",
            f"/api/vms/{vm}/disks/", "/api/jobs/", "/api/jobs/?pagination=cursor", "/api/jobs/?status=succeeded",
            "/api/disks/", "/api/images/", "/api/backups/", "/api/networks/", "/api/flavors/", "/api/quota/"]


@pytest.mark.parametrize("role", ["owner", "member"])
def test_api_reads_of_a_user_cost_the_same_at_10_and_1000_vms(world, role):
    """An owner sees every VM of the world; a member of its group half of them (the shared ones)."""
    _assert_constant(world, api_client(getattr(world, role)), _api_paths(world))


def test_api_reads_of_an_administrator_cost_the_same_at_10_and_1000_vms(world):
    paths = [*_api_paths(world), "/api/vms/?owner=scale-owner", "/api/vms/?host=scale-host", "/api/hosts/"]
    _assert_constant(world, api_client(world.admin), paths)


@pytest.mark.parametrize("role", ["owner", "member", "admin"])
def test_web_vm_list_and_its_live_state_cost_the_same_at_10_and_1000_vms(world, role):
    """The VM list page (its first and second page, filtered) and /vms/status.json (live.js's fallback)."""
    paths = ["/", "/?status=running", "/?q=vm-0", "/?page=2", "/vms/status.json"]
    _assert_constant(world, web_client(getattr(world, role)), paths)


def test_admin_changelists_cost_the_same_at_10_and_1000_vms(world):
    paths = ["/admin/vms/vm/", "/admin/portal/job/", "/admin/storage/volume/", "/admin/portal/auditevent/",
             "/admin/vms/vm/?q=vm-0", "/admin/portal/job/?status__exact=succeeded"]
    _assert_constant(world, web_client(world.admin), paths)


@pytest.mark.parametrize("role", ["owner", "member", "admin"])
def test_live_snapshot_on_connect_costs_the_same_at_10_and_1000_vms(world, role):
    """The state a websocket sends when it connects (and on each poll): vms.consumers.live_state."""

    user = getattr(world, role)
    live_state(user=user)  # warm-up
    with CaptureQueriesContext(connection) as small:
        state = live_state(user=user)
    assert len(state["vms"]) == (SMALL // 2 if role == "member" else SMALL)
    world.grow(LARGE)
    with CaptureQueriesContext(connection) as large:
        state = live_state(user=user)
    assert len(state["vms"]) == (LARGE // 2 if role == "member" else LARGE)
    assert len(large.captured_queries) == len(small.captured_queries)

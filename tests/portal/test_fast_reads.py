"""Fast reads (issue #13, part 1): row URLs reversed once per response, cursor pages, visibility without DISTINCT."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import NoReverseMatch
from rest_framework.request import Request
from rest_framework.reverse import reverse

from portal.api import row_url
from tests.scale import scale_world

pytestmark = pytest.mark.django_db


def _request():
    return Request(RequestFactory().get("/api/vms/", HTTP_HOST="portal.example:8443"))


@pytest.mark.parametrize("viewname,kwargs", [
    ("api-vm-detail", {"pk": 7}),
    ("api-vm-detail", {"pk": "123456789012"}),
    ("api-vm-detail", {"pk": "my-vm"}),  # not digits: reversed as usual
    ("api-vm-nic", {"pk": 3, "nic_id": 31}),
    ("api-vm-snapshot", {"pk": 12, "sid": 1}),
    ("api-job-detail", {"pk": str(uuid.uuid4())}),
    ("api-upload-detail", {"pk": uuid.uuid4()}),
])
def test_row_url_is_what_reverse_gives(viewname, kwargs, settings):
    """The same absolute URL as DRF's reverse(), for the first row and for every later one (from the cache)."""
    settings.ALLOWED_HOSTS = ["portal.example"]
    context = {"request": _request()}
    expected = reverse(viewname, kwargs=kwargs, request=context["request"])
    assert expected.startswith("http://portal.example:8443/api/")
    assert row_url(context, viewname, **kwargs) == expected
    assert row_url(context, viewname, **kwargs) == expected
    if "pk" in kwargs and isinstance(kwargs["pk"], int):
        other = {**kwargs, "pk": kwargs["pk"] + 1000}
        assert row_url(context, viewname, **other) == reverse(viewname, kwargs=other, request=context["request"])


def test_row_url_without_a_request_is_relative_and_unknown_routes_raise():
    assert row_url({}, "api-vm-detail", pk=5) == "/api/vms/5/"
    with pytest.raises(NoReverseMatch):
        row_url({}, "api-nothing-detail", pk=5)
    with pytest.raises(NoReverseMatch):  # the second time from the cache
        row_url({}, "api-nothing-detail", pk=6)


def test_vm_list_answers_the_same_urls_as_before(client_for):
    world = scale_world()
    world.grow(3)
    body = client_for(world.owner).get("/api/vms/").json()
    vm = body["results"][0]
    assert vm["url"] == f"http://testserver/api/vms/{vm['id']}/"
    assert vm["jobs_url"] == f"http://testserver/api/vms/{vm['id']}/jobs/"
    assert vm["nics"][0]["url"] == f"http://testserver/api/vms/{vm['id']}/nics/{vm['nics'][0]['id']}/"
    assert vm["ssh"] == f"ssh debian@{vm['nics'][0]['ip_address']}"  # running VM, NIC with an address
    job = client_for(world.owner).get("/api/jobs/").json()["results"][0]
    assert job["target_url"] == f"http://testserver/api/vms/{job['target_id']}/"
    assert job["url"] == f"http://testserver/api/jobs/{job['id']}/"


def _walk(client, path: str) -> list[dict]:
    rows, pages = [], 0
    while path:
        response = client.get(path)
        assert response.status_code == 200, response.content
        body = response.json()
        assert "count" not in body  # cursor pages never count
        rows += body["results"]
        path, pages = body["next"], pages + 1
        assert pages < 50
    return rows


def test_cursor_pagination_on_the_vm_list_walks_every_visible_vm_once_in_name_order(client_for):
    world = scale_world()
    world.grow(23)
    client = client_for(world.member)  # sees the group's VMs only
    by_page = client.get("/api/vms/?page_size=200").json()
    assert by_page["count"] == 11  # page numbers stay the default, with their count
    rows = _walk(client, "/api/vms/?pagination=cursor&page_size=4")
    assert [r["name"] for r in rows] == [r["name"] for r in by_page["results"]]
    assert len({r["id"] for r in rows}) == 11
    first = client.get("/api/vms/?pagination=cursor&page_size=4").json()
    assert first["previous"] is None and "cursor=" in first["next"]
    # the next link alone (no pagination=) keeps cursor pages; filters still apply
    running = _walk(client, "/api/vms/?pagination=cursor&page_size=2&status=running")
    assert running and all(r["status"] == "running" for r in running)


def test_cursor_pagination_on_the_job_list_is_newest_first(client_for):
    world = scale_world()
    world.grow(7)
    client = client_for(world.owner)
    rows = _walk(client, "/api/jobs/?pagination=cursor&page_size=3")
    assert len(rows) == 7
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
    assert [r["id"] for r in rows] == [r["id"] for r in client.get("/api/jobs/").json()["results"]]


def test_bad_pagination_requests_are_clear_4xx_errors(client_for):
    world = scale_world()
    world.grow(2)
    client = client_for(world.owner)
    response = client.get("/api/vms/?pagination=sideways")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "pagination" in response.json()["errors"]
    vm = world.vm_ids[0]
    response = client.get(f"/api/vms/{vm}/jobs/?pagination=cursor")  # a list with page numbers only
    assert response.status_code == 400
    assert response.json()["detail"] == "pagination: this list has page numbers only."
    response = client.get("/api/vms/?cursor=not-a-cursor")
    assert response.status_code == 404
    assert response.json()["detail"] == "Invalid cursor"


def test_a_network_shared_with_two_of_a_users_groups_is_listed_once(make_user, test_host):
    """The EXISTS that replaced DISTINCT: one row per network however many of the user's groups share it."""
    from networks.models import Network
    from networks.selectors import network_usable

    user = make_user("carol")
    red, blue = Group.objects.create(name="red"), Group.objects.create(name="blue")
    user.groups.add(red, blue)
    shared = Network.objects.create(name="shared-twice", cidr="10.9.0.0/24")
    shared.groups.add(red, blue)
    Network.objects.create(name="not-theirs", cidr="10.8.0.0/24")
    assert list(network_usable(user=user).values_list("name", flat=True)) == ["shared-twice"]


def test_vm_visibility_needs_no_distinct_and_keeps_its_rule(client_for, make_user):
    """A user in the VMs' group and in another group sees the shared VMs once each, and none of the others."""
    world = scale_world()
    world.grow(6)
    world.member.groups.add(Group.objects.create(name="other-team"))
    from vms.selectors import vm_visible

    visible = list(vm_visible(user=world.member).values_list("pk", flat=True))
    assert "DISTINCT" not in str(vm_visible(user=world.member).query)
    assert sorted(visible) == sorted(world.vm_ids[1::2])  # the odd ones are the group's
    stranger = make_user("stranger")
    assert not vm_visible(user=stranger).exists()

"""Smoke test of benchmarks/bench_load.py's Django side: the seed and the bare view (the framework's floor)."""

import pytest
from django.conf import settings
from django.test import Client

from benchmarks.load_app import seed, session_for
from portal.models import Job
from vms.models import VM

pytestmark = [pytest.mark.django_db, pytest.mark.urls("benchmarks.urls_load")]


def test_seed_rows_and_the_bare_view_gives_the_api_page():
    seeded = seed(vms=60, owned=55, other_users=2, jobs_per_vm=2, batch_size=7)
    assert VM.objects.count() == 60 and VM.objects.filter(owner=seeded.user).count() == 55
    assert sorted(seeded.vm_ids) == sorted(VM.objects.filter(owner=seeded.user).values_list("pk", flat=True))
    assert Job.objects.filter(target_type="vm").count() == 120

    client = Client(headers={"Authorization": f"Token {seeded.token}"})
    api, bare = client.get("/api/vms/"), client.get("/bench/vms/")
    assert api.status_code == bare.status_code == 200
    api_body, bare_body = api.json(), bare.json()
    assert api_body["count"] == bare_body["count"] == 55
    assert [vm["id"] for vm in bare_body["results"]] == [vm["id"] for vm in api_body["results"]]
    assert len(bare_body["results"]) == 50
    first = bare_body["results"][0]
    assert (first["name"], first["owner__username"], first["host__name"]) == ("vm-00000", "bench-user", "bench-load")
    assert Client().get("/bench/vms/").status_code == 401
    assert Client(headers={"Authorization": "Token nope"}).get("/bench/vms/").status_code == 401

    browser = Client()
    browser.cookies[settings.SESSION_COOKIE_NAME] = session_for(seeded.user)
    page = browser.get("/")
    assert page.status_code == 200 and b"vm-00000" in page.content

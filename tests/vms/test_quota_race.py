"""Twenty concurrent API creates against a quota of three make exactly three VMs and three domains.

Runs on PostgreSQL only: SQLite serialises every write transaction, so it cannot show a race. Each
request is a real HTTP call to the live server, handled in its own thread with its own database
connection; the quota row lock (quotas.services.quota_reserve, SELECT ... FOR UPDATE) must serialise
them. The create jobs run for real (ImmediateBackend runs them after commit, in the request thread).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from portal.hypervisor import get_driver
from quotas.models import Quota
from vms.choices import VMStatus
from vms.models import VM

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="quota races need PostgreSQL"),
]

REQUESTS = 20
QUOTA = 3
REFUSED = f"Quota exceeded for VMs: requested 1, {QUOTA} of {QUOTA} in use"


def _our_domains(driver) -> set[str]:
    return {d.uuid for d in driver.list_domains() if (d.metadata or {}).get("instance") == settings.INSTANCE_ID}


def _post(url: str, token: str, payload: dict, barrier: threading.Barrier) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json",
                 "Accept": "application/json"})
    barrier.wait(timeout=30)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _concurrent_creates(live_server, user) -> list[tuple[int, dict]]:
    """REQUESTS creates by `user`, released at once by a barrier, each in its own thread."""
    token = Token.objects.create(user=user).key
    url = f"{live_server.url}/api/vms/"
    barrier = threading.Barrier(REQUESTS)
    results: list = [None] * REQUESTS

    def worker(i: int) -> None:
        payload = {"name": f"race-{i}", "vcpus": 1, "memory_mib": 64, "disk_gib": 1}
        try:
            results[i] = _post(url, token, payload, barrier)
        except BaseException as exc:  # reported below, with the others' outcomes
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    errors = [r for r in results if not isinstance(r, tuple)]
    assert not errors, errors
    return results


def _assert_exactly_quota_accepted(results, user) -> None:
    accepted = [body for status, body in results if status == 202]
    refused = [(status, body) for status, body in results if status != 202]
    # A create that failed frees its quota (its VM is deleted), so a later request may then fit: say so.
    outcome = list(VM.objects.filter(owner=user).values_list("name", "status", "last_error"))
    assert len(accepted) == QUOTA, (outcome, results)
    assert len(refused) == REQUESTS - QUOTA
    for status, body in refused:
        assert status == 403, body
        assert body["code"] == "quota_exceeded", body
        assert body["detail"] == REFUSED, body
        assert (body["resource"], body["requested"], body["limit"], body["in_use"]) == ("VMs", 1, QUOTA, QUOTA)
    assert VM.objects.filter(owner=user).count() == QUOTA  # nothing was created and rolled back later
    vms = VM.objects.filter(owner=user).exclude(status=VMStatus.DELETED)
    assert vms.count() == QUOTA
    assert set(vms.values_list("status", flat=True)) == {VMStatus.RUNNING}, list(vms.values("name", "last_error"))


# Three real creates run at once; defining a domain can take a minute on a busy libvirtd.
@pytest.mark.qemu
@pytest.mark.timeout(1200)
def test_twenty_concurrent_creates_against_a_quota_of_three_make_exactly_three(
        live_server, qemu_host, firmware_image, make_user):
    user = make_user("racer", quota={"max_vms": QUOTA, "max_vcpus": 100, "max_memory_mib": 100_000,
                                     "max_disk_gib": 1000})
    driver = get_driver(qemu_host.uri)
    domains_before = _our_domains(driver)

    results = _concurrent_creates(live_server, user)

    _assert_exactly_quota_accepted(results, user)
    vms = VM.objects.filter(owner=user).exclude(status=VMStatus.DELETED)
    new_domains = _our_domains(driver) - domains_before
    assert new_domains == {str(u) for u in vms.values_list("uuid", flat=True)}
    assert len(new_domains) == QUOTA


def test_concurrent_first_creates_of_a_user_without_a_quota_row_yet(live_server, test_host, make_user,
                                                                    settings):
    """The quota row is created on first use; twenty first requests still make exactly three VMs."""
    settings.DEFAULT_QUOTA = {"max_vms": QUOTA, "max_vcpus": 100, "max_memory_mib": 100_000, "max_disk_gib": 1000}
    user = make_user("newcomer")
    assert not Quota.objects.filter(user=user).exists()

    results = _concurrent_creates(live_server, user)

    _assert_exactly_quota_accepted(results, user)
    assert Quota.objects.filter(user=user).count() == 1

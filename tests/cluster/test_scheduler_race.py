"""Twenty concurrent creates by twenty users (twenty quota rows: the quota lock does not serialise them) into
hosts where only a few VMs fit: placement runs in the record phase under the cluster's row lock, so exactly
that many are accepted and no host is overcommitted.

PostgreSQL only (SQLite serialises every write transaction, so it cannot show a race). Each thread calls
the service with its own database connection, each with its own image (vm_create locks the image's row);
the create jobs run for real on test:///default.
"""

from __future__ import annotations

import tempfile
import threading

import pytest
from django.db import connection, connections

from cluster.models import Host
from cluster.placement import host_loads
from cluster.scheduler import NoHostAvailable
from storage.services import image_register
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="placement races need PostgreSQL"),
]

REQUESTS = 20
VM_MIB = 512
FIT = 3


@pytest.mark.timeout(600)
def test_twenty_concurrent_creates_never_overcommit_a_host(transactional_db, test_host, make_user):
    # Room for exactly FIT VMs of VM_MIB (and a second host, disabled, that takes none).
    Host.objects.filter(pk=test_host.pk).update(memory_mib=FIT * VM_MIB + VM_MIB // 2)
    Host.objects.create(name="disabled-b", uri="test:///synthetic/disabled-b", status="up", enabled=False,
                        memory_mib=65536, cpus=8, cluster=test_host.cluster)
    # One image per request: vm_create locks its image's row, which would serialise creates of one image anyway.
    images = []
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)  # a blank disk with an MBR
        fh.flush()
        for i in range(REQUESTS):
            images.append(image_register(actor=None, host=test_host, name=f"race-img-{i}", title=f"race {i}",
                                         source_path=fh.name, fmt="raw"))
    users = [make_user(f"racer{i}", quota={"max_vms": 5, "max_vcpus": 10, "max_memory_mib": 10_000,
                                           "max_disk_gib": 100}) for i in range(REQUESTS)]
    barrier = threading.Barrier(REQUESTS)
    results: list = [None] * REQUESTS

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = services.vm_create(actor=users[i], via="api", name=f"race-{i}", image=images[i], vcpus=1,
                                            memory_mib=VM_MIB, disk_gib=1, start=False)
        except BaseException as exc:  # counted below
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=500)

    accepted = [r for r in results if isinstance(r, services.ActionResult)]
    refused = [r for r in results if isinstance(r, NoHostAvailable)]
    others = [r for r in results if r not in accepted and r not in refused]
    assert not others, others
    assert len(accepted) == FIT, results
    assert len(refused) == REQUESTS - FIT
    assert all(str(r) == f"No host has {VM_MIB} MiB free; ask an administrator." for r in refused)
    assert all(r.hosts.startswith("testhost has ") for r in refused)
    live = VM.objects.exclude(status=VMStatus.DELETED)
    assert live.count() == FIT
    assert set(live.values_list("host_id", flat=True)) == {test_host.pk}
    assert set(live.values_list("status", flat=True)) == {VMStatus.STOPPED}, list(live.values("name", "last_error"))
    test_host.refresh_from_db()
    assert host_loads()[test_host.pk].memory_mib == FIT * VM_MIB <= test_host.memory_mib

"""The bulk listing on qemu:///system is one libvirt RPC whatever the number of domains (issue #13), proved
with libvirt's own client log (every remote procedure call it queues is logged), and the gateway's call
counter agrees with it. Firmware-only domains, defined (one started) and removed again: few and short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from django.conf import settings

from cluster.services import host_sync
from portal.hypervisor import DomainSpec, get_driver

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

# Run in a child process: libvirt reads its log settings when it loads. Prints, for each read, how many
# remote calls libvirt's client queued (program 0x20008086 = the remote driver; keepalives are another
# program) and what the gateway's counter said.
PROBE = r"""
import json, sys
from portal.hypervisor.driver import LibvirtDriver

log = sys.argv[1]
def rpcs():
    with open(log, errors="replace") as fh:
        return sum(1 for line in fh if "RPC_CLIENT_MSG_TX_QUEUE" in line and "prog=536903814" in line)

driver = LibvirtDriver(sys.argv[2])
driver.connection()
out = {}
for name, read in (("states", driver.list_domain_states), ("one_by_one", driver.list_domains)):
    before = rpcs()
    with driver.counting_calls() as count:
        domains = read()
    out[name] = {"domains": len(domains), "rpcs": rpcs() - before, "counted": count.total}
some = driver.list_domain_states()[0].uuid
before = rpcs()
with driver.counting_calls() as count:
    driver.domain_metadata(some)
out["metadata"] = {"rpcs": rpcs() - before, "counted": count.total}
print(json.dumps(out))
"""


def _probe(tmp_path, uri: str) -> dict:
    log = tmp_path / f"rpc-{uuid.uuid4().hex[:6]}.log"
    env = {**os.environ, "LIBVIRT_LOG_FILTERS": "1:rpc", "LIBVIRT_LOG_OUTPUTS": f"1:file:{log}",
           "PYTHONPATH": str(settings.BASE_DIR)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(log), uri], env=env, capture_output=True, text=True,
                          timeout=60, cwd=settings.BASE_DIR)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _define(driver, count: int) -> list[str]:
    uuids = []
    for _ in range(count):
        uid = str(uuid.uuid4())
        driver.define(DomainSpec(name=f"{settings.DOMAIN_PREFIX}-bulk-{uid[:8]}", uuid=uid, vcpus=1, memory_mib=32,
                                 graphics=False, metadata={"instance": settings.INSTANCE_ID}))
        uuids.append(uid)
    return uuids


def test_one_rpc_lists_every_domain_with_its_state_on_qemu(qemu_host, tmp_path):
    driver = get_driver(qemu_host.uri)
    mine = _define(driver, 1)
    try:
        driver.start(mine[0])  # one running (SeaBIOS finds nothing to boot and waits): an active state too
        states = {d.uuid: d.state for d in driver.list_domain_states()}
        assert states[mine[0]].is_active, states
        small = _probe(tmp_path, qemu_host.uri)
        mine += _define(driver, 4)
        big = _probe(tmp_path, qemu_host.uri)
        print(f"qemu:///system RPCs: {small} / {big}")
        assert big["states"]["domains"] >= small["states"]["domains"] + 4, (small, big)
        for probe in (small, big):
            assert probe["states"]["rpcs"] == 1, probe  # one round trip, whatever the number of domains
            assert probe["states"]["counted"] == probe["states"]["rpcs"], probe  # the counter counts RPCs
            assert probe["metadata"]["rpcs"] == probe["metadata"]["counted"] == 2, probe
            # The old reading, for contrast: a listing then three calls per domain.
            assert probe["one_by_one"]["rpcs"] == 1 + 3 * probe["one_by_one"]["domains"], probe
            assert probe["one_by_one"]["counted"] == probe["one_by_one"]["rpcs"], probe

        # The reconcile itself: a steady host costs the same calls at 1 and at 5 of our domains (other
        # than the metadata of domains it had not seen yet: other tests may define some meanwhile).
        def steady() -> dict[str, int]:
            host_sync(host=qemu_host)
            with driver.counting_calls() as count:
                host_sync(host=qemu_host)
            return {k: v for k, v in count.by_name.items() if k not in {"XMLDesc", "lookupByUUIDString"}}

        at_five = steady()
        for uid in mine[1:]:
            driver.undefine(uid)
        at_one = steady()
        assert at_five == at_one and at_five.get("getAllDomainStats") == 1, (at_one, at_five)
        assert not {"info", "isPersistent"} & set(at_five), at_five
    finally:
        for uid in mine:
            driver.undefine(uid)

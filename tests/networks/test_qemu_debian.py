"""The Debian cloud-init guest through the portal, reached over SSH from inside a network namespace.

One boot for the module (emulated, a Debian boot with cloud-init takes a minute or more here): the
owner's key logs in and `hostname` answers the VM's name; another user's key is refused.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accounts.services import sshkey_add
from networks.services import network_create
from portal.hypervisor import get_driver
from vms import selectors, services
from vms.models import VM, VMNic
from vms.reconcile import nic_addresses_refresh

pytestmark = [pytest.mark.qemu, pytest.mark.debian, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(1200)]


def keypair(directory: Path, name: str) -> tuple[Path, str]:
    key = Ed25519PrivateKey.generate()
    private = directory / name
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    os.chmod(private, 0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {name}@test"


def ssh(ns, private: Path, login: str, ip: str, command: str) -> subprocess.CompletedProcess:
    return ns.exec(["ssh", "-i", str(private), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                    f"{login}@{ip}", command], timeout=30)


def test_debian_guest_answers_ssh_with_the_owners_key_only(ns_host, ns_hypervisor, debian_image, admin_user, alice,
                                                           bob, tmp_path):
    alice_key, alice_pub = keypair(tmp_path, "alice")
    bob_key, bob_pub = keypair(tmp_path, "bob")
    sshkey_add(actor=alice, via="cli", public_key=alice_pub)
    sshkey_add(actor=bob, via="cli", public_key=bob_pub)
    network_create(actor=admin_user, via="cli", name="devnet", mode="nat", cidr="10.132.0.0/24", hosts=[ns_host],
                   is_public=True, is_default=True)
    result = services.vm_create(actor=alice, via="cli", name="deb-ssh", image=debian_image, vcpus=2,
                                memory_mib=512, disk_gib=debian_image.min_disk_gib,
                                user_data="#cloud-config\nruncmd:\n  - [touch, /run/portal-user-data-ran]\n")
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.host == ns_host and vm.status == "running", (vm.status, vm.last_error)
    nic = VMNic.objects.get(vm=vm)

    deadline = time.monotonic() + 900
    ip = None
    while time.monotonic() < deadline and not ip:
        nic_addresses_refresh(host=ns_host)
        nic.refresh_from_db()
        ip = nic.ip_address
        time.sleep(2)
    assert ip, "the Debian guest took no DHCP lease"
    assert selectors.vm_ssh_command(vm=vm) == f"ssh {debian_image.login_user}@{ip}"

    answer = None
    while time.monotonic() < deadline:
        answer = ssh(ns_hypervisor, alice_key, debian_image.login_user, ip, "hostname; test -e /run/portal-user-data-ran && echo user-data-ran")
        if answer.returncode == 0 and "user-data-ran" in answer.stdout:
            break
        time.sleep(3)
    assert answer is not None and answer.returncode == 0, answer.stderr if answer else "no attempt"
    assert answer.stdout.split() == ["deb-ssh", "user-data-ran"]

    refused = ssh(ns_hypervisor, bob_key, debian_image.login_user, ip, "hostname")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr

    seed = vm.disks.get(readonly=True).volume
    assert seed.name.endswith("-cidata.iso")
    services.vm_delete(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == "deleted"
    left = {v.name for v in get_driver(ns_host.uri).list_volumes(pool=seed.pool.name)}
    assert not [name for name in left if vm.domain_name in name]  # disk and seed are gone

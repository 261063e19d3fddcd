"""cloud-init NoCloud seeds: what goes into them, the ISO NoCloud reads, and the user-data rules."""

from __future__ import annotations

import email
import io
import tempfile

import pycdlib
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accounts.services import sshkey_add
from portal.exceptions import ValidationFailed
from portal.hypervisor import get_driver
from storage.services import image_register
from vms import cloudinit, services
from vms.models import VM, VMDisk

pytestmark = pytest.mark.django_db(transaction=True)


def public_key(comment: str) -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + f" {comment}"


@pytest.fixture
def cloud_image(test_host):
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)  # a blank disk with an MBR
        fh.flush()
        return image_register(actor=None, host=test_host, name="test-cloud", title="Cloud", source_path=fh.name,
                              fmt="raw", cloud_init=True, login_user="debian", replace=True)


def create(user, **kw):
    return services.vm_create(actor=user, via="cli", name=kw.pop("name", "web-1"), vcpus=1, memory_mib=128,
                              disk_gib=1, networks=[], **kw)


def iso_files(data: bytes) -> dict[str, str]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    out = {}
    for name in ("meta-data", "user-data", "network-config"):
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
        out[name] = buf.getvalue().decode()
        joliet = io.BytesIO()
        iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
        assert joliet.getvalue() == buf.getvalue()
    iso.close()
    return out


def test_the_seed_carries_the_name_the_owners_keys_and_each_nic(test_host, cloud_image, alice, bob, make_network):
    make_network("lab", is_public=True)
    mine = public_key("alice@laptop")
    sshkey_add(actor=alice, via="cli", public_key=mine)
    sshkey_add(actor=bob, via="cli", public_key=public_key("bob@laptop"))
    vm = services.vm_create(actor=alice, via="cli", name="web-1", image=cloud_image, vcpus=1, memory_mib=128,
                            disk_gib=1, networks=["lab"], start=False).vm
    files = iso_files(cloudinit.build_seed(VM.objects.get(pk=vm.pk)))
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": f"iid-{vm.uuid}", "local-hostname": "web-1"}
    assert files["user-data"].startswith("#cloud-config\n")
    config = yaml.safe_load(files["user-data"])
    assert config["hostname"] == "web-1" and config["ssh_pwauth"] is False
    [user] = config["users"]
    assert user["name"] == "debian" and user["ssh_authorized_keys"] == [mine] and user["lock_passwd"] is True
    mac = vm.nics.get().mac
    assert yaml.safe_load(files["network-config"]) == {
        "version": 2, "ethernets": {"nic0": {"match": {"macaddress": mac}, "set-name": "eth0", "dhcp4": True}}}


def test_user_data_is_merged_as_a_second_part(test_host, cloud_image, alice):
    vm = create(alice, image=cloud_image, start=False, user_data="#!/bin/sh\necho hi > /run/hi\n").vm
    message = email.message_from_string(cloudinit.user_data(VM.objects.get(pk=vm.pk)))
    parts = [(p.get_content_type(), p.get_payload(decode=True).decode()) for p in message.walk()
             if not p.is_multipart()]
    assert [kind for kind, _ in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert parts[0][1].startswith("#cloud-config") and "echo hi" in parts[1][1]
    merge = [p["Merge-Type"] for p in message.walk() if not p.is_multipart()]
    assert merge == ["list(append)+dict(no_replace,recurse_list)+str()"] * 2  # the owner's keys stay


def test_a_cloud_init_vm_gets_a_read_only_seed_disk_that_goes_with_it(test_host, cloud_image, alice):
    vm = create(alice, image=cloud_image).vm
    seed = VMDisk.objects.get(vm=vm, readonly=True)
    assert seed.target == "vdz" and seed.volume.format == "raw" and seed.volume.name.endswith("-cidata.iso")
    xml = get_driver(test_host.uri).domain_xml(str(vm.uuid))
    assert "vdz" in xml and "<readonly" in xml
    services.vm_delete(actor=alice, via="cli", vm=vm)
    names = {v.name for v in get_driver(test_host.uri).list_volumes(pool=seed.volume.pool.name)}
    assert f"{vm.domain_name}-cidata.iso" not in names


@pytest.mark.parametrize("text, words", [
    ("#cloud-config\nusers: [unclosed\n", "not valid YAML"),
    ("#cloud-config\n- a list\n", "mapping"),
    ("hello: world\n", "must start with #cloud-config"),
    ("#!/bin/sh\n" + "x" * 17000, "at most 16384 bytes"),
])
def test_bad_user_data_is_refused_and_nothing_is_created(test_host, cloud_image, alice, text, words):
    with pytest.raises(ValidationFailed) as err:
        create(alice, image=cloud_image, user_data=text)
    assert "user_data" in err.value.errors and words in err.value.message
    assert not VM.objects.exists()


def test_user_data_for_an_image_without_cloud_init_is_refused(test_host, alice):
    with pytest.raises(ValidationFailed, match="does not take cloud-init"):
        create(alice, user_data="#cloud-config\n{}\n")
    assert not VM.objects.exists()

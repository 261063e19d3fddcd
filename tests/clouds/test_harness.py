"""The local OpenStack harness (tests/openstack_servers.py): a real Glance and a real Neutron answer through
openstacksdk with the kwargs the portal will use, and stopping them leaves nothing behind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading
import time
from pathlib import Path

import openstack
import pytest

from tests.openstack_servers import (
    GlanceServer,
    MariaDatabase,
    NeutronServer,
    PostgresDatabase,
    clouds_yaml,
    openstack_kwargs,
)


def _qcow2(path: Path, size: str = "64M") -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path.read_bytes()


def _wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_glance_upload_qcow2_hashes(glance_server, tmp_path):
    data = _qcow2(tmp_path / "tiny.qcow2")
    conn = glance_server.connection()
    assert list(conn.image.images()) == []  # a fresh database

    image = conn.image.create_image(name="harness-tiny", data=data, disk_format="qcow2",
                                    container_format="bare", visibility="public", wait=True)
    image = conn.image.wait_for_status(conn.image.get_image(image.id), status="active", wait=60)

    assert image.hash_algo == "sha512"
    assert image.hash_value == hashlib.sha512(data).hexdigest()
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.size == len(data)
    assert image.virtual_size == 64 * 1024 * 1024
    assert image.owner == "vmportal"  # the harness's fixed project
    assert image.visibility == "public"  # admin role: public images are allowed
    assert [i.id for i in conn.image.images()] == [image.id]
    assert b"".join(conn.image.download_image(image, stream=True).iter_content(1 << 20)) == data
    conn.image.delete_image(image)


def test_glance_project_header_overrides_the_default(glance_server, tmp_path):
    conn = glance_server.connection(headers={"X-Project-Id": "tenant-b", "X-Roles": "member,reader"})
    image = conn.image.create_image(name="tenant-b-image", data=_qcow2(tmp_path / "b.qcow2", "1M"),
                                    disk_format="qcow2", container_format="bare", wait=True)
    try:
        assert conn.image.get_image(image.id).owner == "tenant-b"
        with pytest.raises(openstack.exceptions.ForbiddenException):  # no admin role: no public images
            conn.image.create_image(name="nope", data=b"", disk_format="raw", container_format="bare",
                                    visibility="public")
    finally:
        glance_server.connection().image.delete_image(image.id)


def test_glance_web_download_from_127_0_0_1(glance_server, tmp_path):
    data = _qcow2(tmp_path / "web.qcow2", "8M")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        conn = glance_server.connection()
        image = conn.image.create_image(name="harness-web", disk_format="qcow2", container_format="bare",
                                        allow_duplicates=True)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/web.qcow2"
        response = conn.image.import_image(image, method="web-download", uri=url)
        assert response is None or getattr(response, "status_code", 202) == 202
        image = conn.image.wait_for_status(image, status="active", failures=["killed"], wait=120)
        assert image.hash_value == hashlib.sha512(data).hexdigest()
        conn.image.delete_image(image)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_neutron_network_subnet_dhcp_pool_dns(neutron_server):
    conn = neutron_server.connection()
    net = conn.network.create_network(name="harness-net")
    subnet = conn.network.create_subnet(
        network_id=net.id, name="harness-v4", ip_version=4, cidr="10.66.0.0/24", gateway_ip="10.66.0.1",
        enable_dhcp=True, allocation_pools=[{"start": "10.66.0.100", "end": "10.66.0.199"}],
        dns_nameservers=["10.66.0.1", "192.0.2.53"])
    try:
        assert net.id in [n.id for n in conn.network.networks()]
        (listed,) = [s for s in conn.network.subnets(network_id=net.id)]
        assert listed.id == subnet.id
        assert listed.cidr == "10.66.0.0/24"
        assert listed.is_dhcp_enabled is True
        assert listed.allocation_pools == [{"start": "10.66.0.100", "end": "10.66.0.199"}]
        assert listed.dns_nameservers == ["10.66.0.1", "192.0.2.53"]
        assert conn.network.get_network(net.id).subnet_ids == [subnet.id]
        assert net.provider_network_type == "vxlan"  # ML2 with its tenant network type, no agents
    finally:
        conn.network.delete_subnet(subnet)
        conn.network.delete_network(net)


def test_one_connection_reaches_glance_and_neutron(glance_server, neutron_server):
    kwargs = openstack_kwargs(glance=glance_server, neutron=neutron_server)
    assert kwargs == {"auth_type": "none", "auth": {"endpoint": glance_server.url},
                      "image_endpoint_override": glance_server.url,
                      "network_endpoint_override": neutron_server.url}
    cloud = clouds_yaml("local", glance=glance_server, neutron=neutron_server)["clouds"]["local"]
    for conn in (openstack.connect(**kwargs), openstack.connection.Connection(**cloud)):
        assert isinstance(list(conn.image.images()), list)
        net = conn.network.create_network(name="one-connection")
        try:
            assert net.id in [n.id for n in conn.network.networks()]
        finally:
            conn.network.delete_network(net)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0


@pytest.mark.parametrize("cls, db_class", [(GlanceServer, PostgresDatabase), (NeutronServer, MariaDatabase)])
def test_stop_leaves_no_process_and_no_database(cls, db_class):
    server = cls().start()
    pid, db_name, workdir, url = server.pid, server.database.name, server.workdir, server.url
    assert db_name in db_class.list_names()
    assert workdir.is_dir()
    children = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert str(pid) in children

    server.stop()

    assert _gone(pid)
    assert all(_gone(int(child)) for child in children)
    assert subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).returncode == 1
    assert db_name not in db_class.list_names()
    assert not workdir.exists()
    from tests.openstack_servers import _http_status

    assert _http_status(url, "/healthcheck", timeout=2) is None
    server.stop()  # idempotent

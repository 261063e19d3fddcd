"""Security review (issue #12): a host's migration URI is dialled by the source host's libvirtd (root):
it cannot name a program for that libvirtd to run."""

from __future__ import annotations

import pytest

from cluster.hostconfig import host_configure
from cluster.models import Host
from portal.exceptions import ValidationFailed


@pytest.mark.parametrize("uri", [
    "qemu+ssh://root@kvm2/system?command=/tmp/evil",
    "qemu+ssh://root@kvm2/system?netcat=/tmp/evil%20-e",
    "qemu+libssh2://kvm2/system?known_hosts=/x&command=/bin/sh",
])
def test_a_migration_uri_naming_a_program_is_refused(db, admin_user, uri):
    host = Host.objects.create(name="kvm2", uri="qemu+tcp://10.0.0.2/system")
    with pytest.raises(ValidationFailed) as caught:
        host_configure(actor=admin_user, via="cli", host=host, migration_uri=uri)
    assert "migration_uri" in caught.value.errors
    host.refresh_from_db()
    assert host.migration_uri == ""
    host_configure(actor=admin_user, via="cli", host=host, migration_uri="qemu+ssh://root@kvm2/system?keyfile=/k")
    host.refresh_from_db()
    assert host.migration_uri == "qemu+ssh://root@kvm2/system?keyfile=/k"

"""Gaps a fresh user met: the URI help names every scheme, setup_portal keeps a registered host's name."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import override_settings

from cluster.hostconfig import host_uri_check
from cluster.models import Host
from cluster.services import host_register
from portal.exceptions import ValidationFailed


def test_unknown_scheme_lists_qemu_unix_too():
    with pytest.raises(ValidationFailed) as info:
        host_uri_check("xen:///system")
    text = str(info.value.errors["uri"])
    for scheme in ("qemu:///", "qemu+ssh://", "qemu+tcp://", "qemu+tls://", "qemu+unix:///", "test:///"):
        assert scheme in text, scheme


def test_setup_portal_keeps_the_name_of_a_registered_host(db, tmp_path):
    with override_settings(LIBVIRT_URI="test:///default", GUEST_DIR=str(tmp_path / "none"), DATA_DIR=str(tmp_path)):
        host_register(actor=None, name="kvm-main", uri="test:///default")
        call_command("setup_portal", "--no-probe", "--quiet")
        assert list(Host.objects.values_list("name", flat=True)) == ["kvm-main"]
        Host.objects.all().delete()
        call_command("setup_portal", "--no-probe", "--quiet")
        assert list(Host.objects.values_list("name", flat=True)) == ["local"]  # a new host is "local"

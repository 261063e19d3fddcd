"""Networks on libvirt's test:///default driver: defined and started there like on a real host (no dnsmasq,
no guests), which is all the admin, the CLI and Slack need. Real networked guests run only inside network
namespaces (see docs/networks.md)."""

from __future__ import annotations

import pytest

TEST_URI = "test:///default"


@pytest.fixture
def libvirt_networks():
    """Names of the networks libvirt's test driver has now."""
    from portal.hypervisor import get_driver

    def names() -> set[str]:
        return {n.name for n in get_driver(TEST_URI).list_networks()}

    return names


@pytest.fixture
def make_network(test_host, admin_user):
    """A network made through the service (defined on the test host), as an administrator would."""
    from networks.services import network_create
    from portal.choices import Via

    def make(name: str = "lab", cidr: str = "10.77.0.0/24", *, mode: str = "isolated", hosts=None, **extra):
        return network_create(actor=admin_user, via=Via.CLI, name=name, mode=mode, cidr=cidr,
                              hosts=[test_host] if hosts is None else hosts, **extra)

    return make

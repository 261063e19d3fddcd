"""Virtual networks (libvirt networks defined on hosts), who may use them, and DHCP reservations."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Network(models.Model):
    """A portal network: one libvirt network of the same shape on each of its hosts.

    Rows change only in networks.services, which also defines the network in libvirt.
    """

    class Mode(models.TextChoices):
        ISOLATED = "isolated", "Isolated (VMs and the host only)"
        NAT = "nat", "NAT (outbound through the host)"
        BRIDGE = "bridge", "Bridged to a host bridge"

    name = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=100, blank=True)
    description = models.TextField(blank=True)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.ISOLATED)
    bridge = models.CharField(max_length=15, blank=True,
                              help_text="Bridged networks: the existing bridge on each host (e.g. br0).")
    cidr = models.CharField("address range", max_length=43, blank=True,
                            help_text="IPv4 subnet, e.g. 10.100.0.0/24.")
    gateway = models.GenericIPAddressField("host address", protocol="IPv4", null=True, blank=True,
                                           help_text="The host's address on the network (guests' gateway); "
                                                     "empty: the subnet's first address.")
    dhcp_start = models.GenericIPAddressField("DHCP start", protocol="IPv4", null=True, blank=True)
    dhcp_end = models.GenericIPAddressField("DHCP end", protocol="IPv4", null=True, blank=True)
    dns_servers = models.JSONField("DNS servers", default=list, blank=True,
                                   help_text="Guests resolve through the host, which forwards to these servers "
                                             "(empty: the host's own resolvers).")
    hosts = models.ManyToManyField("cluster.Host", through="NetworkHost", related_name="networks", blank=True)
    groups = models.ManyToManyField(Group, blank=True, related_name="networks",
                                    help_text="Members of these groups may put VMs on this network.")
    is_public = models.BooleanField("open to all users", default=False)
    is_default = models.BooleanField(default=False, help_text="Preselected for new VMs of users who may use it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def libvirt_name(self) -> str:
        """The network's name in libvirt on every host (instance-scoped like domain names)."""
        return f"{settings.DOMAIN_PREFIX}-net-{self.name}"

    @property
    def manages_addresses(self) -> bool:
        return self.mode != self.Mode.BRIDGE and bool(self.cidr)


class NetworkHost(models.Model):
    """A network on one host: whether libvirt has it running there, and its bridge."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="placements")
    host = models.ForeignKey("cluster.Host", on_delete=models.CASCADE, related_name="network_placements")
    active = models.BooleanField(default=False)
    bridge = models.CharField(max_length=15, blank=True)
    last_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "network on host"
        verbose_name_plural = "networks on hosts"
        constraints = [models.UniqueConstraint(fields=["network", "host"], name="network_host_unique")]

    def __str__(self) -> str:
        return f"{self.network} on {self.host}"


class Reservation(models.Model):
    """A static DHCP lease: the NIC with this MAC always gets this address."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="reservations")
    mac = models.CharField("MAC", max_length=17)
    ip = models.GenericIPAddressField("IP address", protocol="IPv4")
    hostname = models.CharField(max_length=63, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network", "ip"]
        constraints = [
            models.UniqueConstraint(fields=["network", "mac"], name="reservation_mac_unique"),
            models.UniqueConstraint(fields=["network", "ip"], name="reservation_ip_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.mac} → {self.ip} on {self.network}"

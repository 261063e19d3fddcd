"""Hypervisor hosts and the domains found on them that the portal did not create."""

from __future__ import annotations

from django.db import models

from .choices import ClusterPolicy, DomainType, HostStatus


class Cluster(models.Model):
    """A group of hosts that VMs move between freely, with one scheduling policy."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    policy = models.CharField(max_length=64, default=ClusterPolicy.EVENLY_DISTRIBUTED,
                              help_text="Scheduling policy: where new VMs go and what the balancer moves.")
    policy_properties = models.JSONField(
        default=dict, blank=True,
        help_text="Policy thresholds, e.g. {\"high_utilization\": 80, \"low_utilization\": 20, "
                  "\"max_concurrent_migrations\": 2, \"memory_overcommit_percent\": 100}.")
    balancing_enabled = models.BooleanField(default=False,
                                            help_text="Run the policy's balancer periodically (live migrations).")
    power_saving_enabled = models.BooleanField(
        default=False, help_text="Put empty hosts on standby through their power agent; wake them when short.")
    ha_enabled = models.BooleanField(default=True, help_text="Restart highly available VMs of a dead host elsewhere.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Host(models.Model):
    """A libvirt host, addressed by its URI; libvirt owns the facts shown about it."""

    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField("libvirt URI", max_length=300, unique=True)
    enabled = models.BooleanField(default=True, help_text="Disabled hosts get no new VMs.")
    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.UNKNOWN)
    domain_type = models.CharField(max_length=8, choices=DomainType.choices, default=DomainType.AUTO)
    kvm_boots_guests = models.BooleanField(null=True, blank=True,
                                           help_text="Probe result: does a Linux guest boot under KVM here?")
    kvm_probed_at = models.DateTimeField(null=True, blank=True)
    hostname = models.CharField(max_length=200, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    cpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveIntegerField(default=0)
    free_memory_mib = models.PositiveIntegerField(default=0)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="hosts")
    tags = models.JSONField(default=list, blank=True,
                            help_text="Labels VMs can require (scheduler filter), e.g. [\"ssd\", \"gpu\"].")
    migration_uri = models.CharField(
        "migration URI", max_length=300, blank=True,
        help_text="How other hosts' libvirtd reach this one for peer-to-peer migration, e.g. "
                  "qemu+tcp://10.0.0.2/system. Blank: the libvirt URI, when it is a network URI.")
    display_address = models.CharField(
        max_length=100, blank=True,
        help_text="Address VNC displays listen on, and that the console relay dials. Blank: 127.0.0.1 for a "
                  "host on this machine; a remote host without one has no screen console.")
    running_domains = models.PositiveIntegerField(default=0)
    cpu_usage_percent = models.FloatField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Heartbeats failed in a row.")
    max_jobs = models.PositiveIntegerField(default=4, help_text="Jobs that may talk to this host at once.")
    power_on_command = models.CharField(max_length=500, blank=True,
                                        help_text="Power agent: command that powers the host on (e.g. ipmitool …).")
    power_off_command = models.CharField(max_length=500, blank=True,
                                         help_text="Power agent: command that powers the host off (fences it).")
    power_status_command = models.CharField(max_length=500, blank=True,
                                            help_text="Power agent: exits 0 when the host is powered on.")
    confirmed_down_at = models.DateTimeField(
        null=True, blank=True, help_text="Fenced or declared down by an administrator: its HA VMs may restart elsewhere.")

    class Meta:
        db_table = "vms_host"  # the model moved from vms: same table, no data migration
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_domain_type(self) -> str:
        if self.domain_type != DomainType.AUTO:
            return self.domain_type
        return DomainType.KVM if self.kvm_boots_guests else DomainType.QEMU


class ForeignDomain(models.Model):
    """A domain found on a host that this portal did not create: listed for admins, never touched."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="foreign_domains")
    uuid = models.CharField(max_length=36)
    name = models.CharField(max_length=200)
    state = models.CharField(max_length=16)
    owner_hint = models.CharField(max_length=200, blank=True,
                                  help_text="Another portal instance's id, if it carries portal metadata.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "vms_foreigndomain"
        ordering = ["host__name", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "uuid"], name="foreign_domain_unique")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host}"

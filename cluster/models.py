"""Hypervisor hosts and the domains found on them that the portal did not create."""

from __future__ import annotations

from django.db import models

from .choices import DomainType, HostStatus


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

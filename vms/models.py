"""Hosts, size presets (flavors), VMs and the domains found on hosts that the portal did not create."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q

from portal.choices import Via

from .choices import DomainType, HostStatus, SnapshotStatus, VMStatus


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
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_domain_type(self) -> str:
        if self.domain_type != DomainType.AUTO:
            return self.domain_type
        return DomainType.KVM if self.kvm_boots_guests else DomainType.QEMU


class Flavor(models.Model):
    """A size preset."""

    name = models.SlugField(max_length=40, unique=True)
    vcpus = models.PositiveIntegerField()
    memory_mib = models.PositiveIntegerField()
    disk_gib = models.PositiveIntegerField()
    description = models.CharField(max_length=200, blank=True)
    is_public = models.BooleanField(default=True)

    class Meta:
        ordering = ["vcpus", "memory_mib", "disk_gib"]

    def __str__(self) -> str:
        return f"{self.name} ({self.vcpus} vCPU, {self.memory_mib} MiB, {self.disk_gib} GiB)"


class VM(models.Model):
    """A virtual machine the portal owns; its row changes only inside vms.services."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="vms")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="vms",
                              help_text="Team that shares this VM and whose quota it uses.")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="vms")
    image = models.ForeignKey("storage.Image", null=True, blank=True, on_delete=models.SET_NULL, related_name="vms")
    flavor = models.ForeignKey(Flavor, null=True, blank=True, on_delete=models.SET_NULL, related_name="vms")
    vcpus = models.PositiveIntegerField()
    memory_mib = models.PositiveIntegerField()
    disk_gib = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=VMStatus.choices, default=VMStatus.CREATING, db_index=True)
    power_state = models.CharField(max_length=16, blank=True, help_text="Last state libvirt reported.")
    domain_name = models.CharField(max_length=100, blank=True)
    domain_type = models.CharField(max_length=8, blank=True)
    created_via = models.CharField(max_length=16, choices=Via.choices, default=Via.WEB)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    observed_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "VM"
        verbose_name_plural = "VMs"
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], condition=~Q(status="deleted"),
                                    name="vm_name_unique_per_owner"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def uuid_str(self) -> str:
        return str(self.uuid)

    @property
    def is_transitional(self) -> bool:
        return self.status in VMStatus.TRANSITIONAL


class Snapshot(models.Model):
    """An internal snapshot of a VM's disks (and RAM when it was running); rows change only in vms.services."""

    vm = models.ForeignKey(VM, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=63)
    description = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.CREATING)
    has_memory = models.BooleanField(default=False, help_text="Holds the RAM: reverting resumes the running guest.")
    vm_state = models.CharField(max_length=16, blank=True, help_text="The VM's power state when it was taken.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_via = models.CharField(max_length=16, choices=Via.choices, default=Via.WEB)
    created_at = models.DateTimeField(auto_now_add=True)
    taken_at = models.DateTimeField(null=True, blank=True)
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vm", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["vm", "name"], name="snapshot_name_unique_per_vm")]

    def __str__(self) -> str:
        return f"{self.vm.name}@{self.name}"

    @property
    def is_busy(self) -> bool:
        return self.status in SnapshotStatus.BUSY


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
        ordering = ["host__name", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "uuid"], name="foreign_domain_unique")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host}"

"""Size presets (flavors), VMs and their snapshots."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from portal.choices import Via

from .choices import SnapshotStatus, VMStatus


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
    host = models.ForeignKey("cluster.Host", on_delete=models.PROTECT, related_name="vms")
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
    volumes = models.ManyToManyField("storage.Volume", through="VMDisk", related_name="vms", blank=True)
    user_data = models.TextField(blank=True, help_text="cloud-init user-data given at create (owner and admins only).")
    cdrom_drive = models.BooleanField("CD-ROM drive", default=False,
                                      help_text="The VM has a CD-ROM drive (boots from it first while media is in).")
    cdrom = models.ForeignKey("storage.Image", null=True, blank=True, on_delete=models.PROTECT, related_name="cdrom_vms",
                              verbose_name="CD-ROM media", help_text="The ISO image in the drive (blank: empty tray).")
    cdrom_target = models.CharField("CD-ROM target", max_length=16, default="hdc",
                                    help_text="Where the guest sees the drive (hdc for VMs the portal made; an adopted "
                                              "domain's drive keeps its own).")
    cdrom_bus = models.CharField("CD-ROM bus", max_length=16, default="ide")
    adopted_at = models.DateTimeField(null=True, blank=True,
                                      help_text="When an administrator adopted this domain, made outside the portal.")

    highly_available = models.BooleanField(
        default=False, help_text="Restarted on another host when its host is confirmed down.")
    ha_priority = models.PositiveSmallIntegerField(default=50, help_text="HA restart order: higher first (0–100).")
    pinned_hosts = models.ManyToManyField("cluster.Host", blank=True, related_name="pinned_vms",
                                          help_text="Run only on these hosts (empty: any host of the cluster).")
    required_tags = models.JSONField(default=list, blank=True, help_text="Host tags the VM needs, e.g. [\"ssd\"].")
    known_status = models.CharField(max_length=16, blank=True,
                                    help_text="The status before its host became unreachable (shown while unknown).")
    # --- leases (issue #14): vms.leases owns these ---
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True,
                                      help_text="Lease end: the VM is stopped then (blank: no lease).")
    lease_stopped_at = models.DateTimeField(null=True, blank=True,
                                            help_text="When the expiry pass asked for the expired VM's stop.")

    class Meta:
        verbose_name = "VM"
        verbose_name_plural = "VMs"
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], condition=~Q(status="deleted"),
                                    name="vm_name_unique_per_owner"),
        ]
        # The scheduler's one aggregate of committed load per host reads only this index (PostgreSQL).
        indexes = [
            models.Index(fields=["host", "status", "memory_mib", "vcpus"], name="vm_host_load"),
            # The lists (API, web, admin) show VMs that are not deleted in name order: read in index order and
            # stop at the page's end instead of sorting every row (all of them for administrators, issue #13).
            models.Index(fields=["name", "id"], condition=~Q(status="deleted"), name="vm_live_by_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def uuid_str(self) -> str:
        return str(self.uuid)

    @property
    def is_transitional(self) -> bool:
        return self.status in VMStatus.TRANSITIONAL


class VMDisk(models.Model):
    """A volume attached to a VM: where the guest sees it (target, bus), whether it may write to it,
    and its validated device properties (vms.properties). Rows change only in vms services."""

    class Bus(models.TextChoices):
        VIRTIO = "virtio", "virtio-blk"
        SCSI = "scsi", "virtio-SCSI"

    class Status(models.TextChoices):
        ATTACHING = "attaching", "Attaching"
        ATTACHED = "attached", "Attached"
        DETACHING = "detaching", "Detaching"

    vm = models.ForeignKey(VM, on_delete=models.CASCADE, related_name="disks")
    volume = models.ForeignKey("storage.Volume", on_delete=models.CASCADE, related_name="attachments")
    target = models.CharField(max_length=16, default="vda")
    bus = models.CharField(max_length=16, default="virtio")
    readonly = models.BooleanField(default=False)
    properties = models.JSONField(default=dict, blank=True,
                                  help_text="Validated device properties: cache, io, discard, serial, boot order, limits.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ATTACHED)

    class Meta:
        verbose_name = "VM disk"
        ordering = ["vm", "target"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "target"], name="vm_disk_target_unique"),
            models.UniqueConstraint(fields=["vm", "volume"], name="vm_disk_volume_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.volume.name} as {self.target} of {self.vm.name}"


class VMNic(models.Model):
    """A NIC of a VM on a portal network; its MAC is unique in the portal. Rows change only in vms.services."""

    class Model(models.TextChoices):
        VIRTIO = "virtio", "virtio (fastest; Linux guests)"
        E1000 = "e1000", "Intel e1000 (compatible)"
        RTL8139 = "rtl8139", "Realtek RTL8139 (legacy guests)"

    class Status(models.TextChoices):
        ATTACHING = "attaching", "Attaching"
        ATTACHED = "attached", "Attached"
        DETACHING = "detaching", "Detaching"

    vm = models.ForeignKey(VM, on_delete=models.CASCADE, related_name="nics")
    network = models.ForeignKey("networks.Network", on_delete=models.PROTECT, related_name="nics")
    mac = models.CharField("MAC", max_length=17, unique=True)
    model = models.CharField(max_length=8, choices=Model.choices, default=Model.VIRTIO)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ATTACHING)
    ip_address = models.GenericIPAddressField("IP address", null=True, blank=True,
                                              help_text="From the network's DHCP leases, refreshed by the monitor.")
    ip_seen_at = models.DateTimeField(null=True, blank=True)
    properties = models.JSONField(default=dict, blank=True, help_text="Validated device properties: boot order.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "VM NIC"
        ordering = ["vm", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.mac} of {self.vm.name} on {self.network.name}"


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
    size_bytes = models.BigIntegerField(default=0, help_text="Space it holds in the VM's disks (counts against the "
                                                             "disk quota): its RAM state and the disks' data then.")
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vm", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["vm", "name"], name="snapshot_name_unique_per_vm")]

    def __str__(self) -> str:
        return f"{self.vm.name}@{self.name}"

    @property
    def is_busy(self) -> bool:
        return self.status in SnapshotStatus.BUSY


class AffinityGroup(models.Model):
    """VMs that should (positive) or must not (negative) share a host; enforcing groups are hard rules."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    positive = models.BooleanField(default=False, help_text="Together on one host (ticked) or apart (unticked).")
    enforcing = models.BooleanField(default=True, help_text="A hard rule (filter) rather than a preference (weight).")
    vms = models.ManyToManyField(VM, blank=True, related_name="affinity_groups")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DevicePropertyRule(models.Model):
    """Whether users may set one device property (vms.properties lists them all), and to which values.
    Without a rule a property is for administrators only."""

    class Device(models.TextChoices):
        DISK = "disk", "Disk"
        NIC = "nic", "NIC"

    device = models.CharField(max_length=8, choices=Device.choices)
    name = models.CharField(max_length=40)
    users_may_set = models.BooleanField(default=True)
    allowed_values = models.JSONField(default=list, blank=True,
                                      help_text="Values users may choose (empty: every valid value).")

    class Meta:
        ordering = ["device", "name"]
        constraints = [models.UniqueConstraint(fields=["device", "name"], name="device_property_rule_unique")]

    def __str__(self) -> str:
        return f"{self.device} {self.name}"


class LeasePolicy(models.Model):
    """A group's VM lease rules; a blank field takes the site's setting (PORTAL_LEASE_*). Days; 0: none/unlimited."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="lease_policy")
    default_days = models.PositiveIntegerField(null=True, blank=True,
                                               help_text="Lease a new VM of this group gets when none is asked "
                                                         "(0: no lease).")
    max_days = models.PositiveIntegerField(null=True, blank=True,
                                           help_text="Longest lease from now, at creation or extension (0: unlimited).")
    max_extension_days = models.PositiveIntegerField(null=True, blank=True,
                                                     help_text="Most days one extension may add (0: unlimited).")
    max_total_days = models.PositiveIntegerField(null=True, blank=True,
                                                 help_text="Longest life from creation to expiry (0: unlimited).")
    grace_days = models.PositiveIntegerField(null=True, blank=True,
                                             help_text="Days an expired (stopped) VM is kept before deletion.")
    delete_expired = models.BooleanField(null=True, blank=True,
                                         help_text="Delete expired VMs after the grace period (no: only stop them).")

    class Meta:
        verbose_name = "lease policy"
        verbose_name_plural = "lease policies"
        ordering = ["group__name"]

    def __str__(self) -> str:
        return f"Lease policy of {self.group.name}"

    def clean(self) -> None:
        """The admin's form: a default lease longer than the same policy's maximum is a contradiction."""
        for limit in ("max_days", "max_total_days"):
            value = getattr(self, limit)
            if self.default_days and value and self.default_days > value:
                raise ValidationError({"default_days": f"The default lease ({self.default_days} days) cannot be "
                                                       f"longer than the maximum ({value} days)."})


class LeaseNotice(models.Model):
    """A lease notice told to a VM's owner, once per lease end: a reminder N days before, the stop, the deletion."""

    class Kind(models.TextChoices):
        REMINDER = "reminder", "Reminder"
        EXPIRED = "expired", "Expired (stopped)"
        DELETED = "deleted", "Deleted after the grace period"

    vm = models.ForeignKey(VM, on_delete=models.CASCADE, related_name="lease_notices")
    expires_at = models.DateTimeField(help_text="The lease end the notice was about (an extension starts afresh).")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    days_before = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["vm", "sent_at", "id"]
        constraints = [models.UniqueConstraint(fields=["vm", "expires_at", "kind", "days_before"],
                                               name="lease_notice_once")]

    def __str__(self) -> str:
        return f"{self.kind} ({self.days_before} d) for {self.vm.name}"


class IdempotencyKey(models.Model):
    """A bulk request's idempotency key (issue #14): the same user's same key with the same parameters
    (`fingerprint`) answers with the same parent job and creates nothing new; a key is forgotten after
    settings.IDEMPOTENCY_TTL_SECONDS."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)
    job = models.ForeignKey("portal.Job", null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"{self.key} ({self.user_id})"

"""Storage domains (libvirt pools), images and templates, and volumes (disks)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class StoragePool(models.Model):
    """A storage domain as one host sees it: a libvirt pool holding image base volumes and VM disks
    (content "data") or backups (content "backup"). Pools of one name on several hosts are one domain;
    a shared or GlusterFS domain is the same storage on every host that has it."""

    class Kind(models.TextChoices):
        DIR = "dir", "Local directory"
        SHARED = "shared", "Shared directory (NFS: mounted at the same path on every host)"
        GLUSTERFS = "glusterfs", "GlusterFS volume"

    class Content(models.TextChoices):
        DATA = "data", "Images and disks"
        BACKUP = "backup", "Backups"

    host = models.ForeignKey("cluster.Host", on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=100)
    path = models.CharField(max_length=500)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DIR)
    content = models.CharField(max_length=8, choices=Content.choices, default=Content.DATA)
    shared = models.BooleanField(
        default=False, help_text="The same storage on every host that has a pool of this name and path (NFS, "
                                 "GlusterFS): VMs on it migrate without copying disks and restart elsewhere (HA).")
    source_host = models.CharField(max_length=255, blank=True, help_text="GlusterFS: the server to mount from.")
    source_name = models.CharField(max_length=255, blank=True, help_text="GlusterFS: the volume's name.")
    capacity_bytes = models.BigIntegerField(default=0, help_text="Size of the storage, as libvirt last reported it.")
    allocation_bytes = models.BigIntegerField(default=0, help_text="Space in use, as libvirt last reported it.")
    available_bytes = models.BigIntegerField(default=0, help_text="Free space, as libvirt last reported it.")
    refreshed_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True, help_text="Running in libvirt when last refreshed.")
    last_error = models.CharField(max_length=500, blank=True, help_text="Why the last refresh failed (blank: it did not).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="pool_unique_per_host")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host}"


class Image(models.Model):
    """An entry of the image library: a base volume in a pool that VM disks are built on.

    kind: a disk image (VMs boot from a thin overlay or a full copy of it), an installation ISO (VMs
    get it as a CD-ROM and boot from it onto an empty disk), or a template (a disk image sealed from a
    VM or imported from an OVA, with the VM's sizes as defaults). An image without owner belongs to
    the library the administrators keep; a user's own images count against their disk quota.
    """

    class BootMode(models.TextChoices):
        KERNEL = "kernel", "Direct kernel boot"
        DISK = "disk", "Firmware boot from disk"

    class Kind(models.TextChoices):
        DISK = "disk", "Disk image"
        ISO = "iso", "ISO (CD-ROM)"
        TEMPLATE = "template", "Template"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Everyone"
        GROUP = "group", "Its groups"
        PRIVATE = "private", "Owner only"

    name = models.SlugField(max_length=60, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DISK)
    title = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    os_name = models.CharField("OS", max_length=100, blank=True)
    pool = models.ForeignKey(StoragePool, on_delete=models.PROTECT, related_name="images")
    volume_name = models.CharField(max_length=200)
    path = models.CharField(max_length=500)
    format = models.CharField(max_length=16, default="qcow2")
    size_bytes = models.BigIntegerField(default=0, help_text="Virtual size of the base image.")
    actual_size_bytes = models.BigIntegerField(default=0, help_text="Space the stored file takes.")
    checksum_sha256 = models.CharField("SHA-256", max_length=64, blank=True,
                                       help_text="Of the stored file, as written to the pool.")
    source = models.CharField(max_length=500, blank=True,
                              help_text="Where it came from: an upload, a URL, a host file, a VM, an OVA, a recipe.")
    source_format = models.CharField(max_length=16, blank=True, help_text="The format it arrived in.")
    boot_mode = models.CharField(max_length=8, choices=BootMode.choices, default=BootMode.DISK)
    kernel_path = models.CharField(max_length=500, blank=True)
    initrd_path = models.CharField(max_length=500, blank=True)
    cmdline = models.CharField(max_length=500, blank=True)
    ready_marker = models.CharField(max_length=100, blank=True,
                                    help_text="Text the guest prints on its serial console once booted.")
    min_disk_gib = models.PositiveIntegerField(default=1)
    cloud_init = models.BooleanField(
        "cloud-init", default=False,
        help_text="Configured by cloud-init: the portal attaches a NoCloud seed (hostname, users, SSH keys).")
    login_user = models.CharField(
        max_length=32, blank=True,
        help_text='The user SSH logs in as on VMs made from this image, e.g. "debian" (blank: none known).')
    default_vcpus = models.PositiveIntegerField(null=True, blank=True, help_text="Templates: the VM's vCPUs.")
    default_memory_mib = models.PositiveIntegerField(null=True, blank=True, help_text="Templates: the VM's memory.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="images", help_text="Blank: the library the administrators keep.")
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.PUBLIC)
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="images",
                                    help_text="Who may use it when its visibility is “Its groups”.")
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self) -> str:
        return self.title or self.name


class Volume(models.Model):
    """A disk in a pool: a thin qcow2 overlay on an image, a full copy of one, or a blank volume.

    Storage does not know VMs: a VM's use of a volume is its attachment (vms.VMDisk: target, bus,
    read-only), so a disk can outlive, move between or be shared by VMs as the storage work grows.
    """

    pool = models.ForeignKey(StoragePool, on_delete=models.PROTECT, related_name="volumes")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=500, blank=True)
    format = models.CharField(max_length=16, default="qcow2")
    capacity_gib = models.PositiveIntegerField()
    backing_image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="volumes")
    # A full copy of an image (no backing file): the image it is (being) copied from. Once copied the
    # volume no longer needs it, so the image may go (the link is cleared).
    copy_of = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="copies",
                                help_text="A full copy: the image it was copied from (it has no backing file).")
    # A data disk (made by a user, attachable to VMs, may outlive them) has an owner and counts against
    # that owner's (or group's) disk quota itself; a VM's boot disk and seed have none (the VM counts them).
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="volumes", help_text="Data disks: whose quota it counts against.")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="volumes",
                              help_text="Data disks of a team: the group whose quota it counts against.")
    label = models.CharField(max_length=63, blank=True, help_text="Data disks: the name users know it by.")
    shareable = models.BooleanField(default=False,
                                    help_text="May be attached read-only to several VMs at once.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["pool", "name"], name="volume_unique_per_pool")]

    def __str__(self) -> str:
        return self.name


class ImageCopy(models.Model):
    """An image's base volume (and kernel/initrd) copied into another host's pool through libvirt's
    volume API, so VMs on that host can be built on it. `path` is set once the copy is complete."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="host_copies")
    pool = models.ForeignKey(StoragePool, on_delete=models.CASCADE, related_name="image_copies")
    volume_name = models.CharField(max_length=200)
    path = models.CharField(max_length=500, blank=True)
    kernel_path = models.CharField(max_length=500, blank=True)
    initrd_path = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    # Who is copying it now (storage.copies): a token and when it was last renewed. A claim not renewed
    # for a while is a dead copier's; the next ensure deletes its half copy and copies again.
    claim = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image__name", "pool__host__name"]
        constraints = [models.UniqueConstraint(fields=["image", "pool"], name="image_copy_unique")]

    def __str__(self) -> str:
        return f"{self.image} on {self.pool.host}"


class Upload(models.Model):
    """A resumable upload (the tus protocol): bytes arrive in chunks into a staging file on the portal
    server; once complete, an image import job probes, converts and stores them, and the file goes."""

    class Status(models.TextChoices):
        RECEIVING = "receiving", "Receiving"
        COMPLETE = "complete", "Complete"
        IMPORTING = "importing", "Importing"
        DONE = "done", "Imported"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=255, blank=True)
    length = models.BigIntegerField(help_text="Bytes announced by the client.")
    offset = models.BigIntegerField(default=0, help_text="Bytes received so far.")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename or self.pk} ({self.offset}/{self.length} bytes)"

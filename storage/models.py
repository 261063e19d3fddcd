"""Storage domains (libvirt pools), images and templates, and volumes (disks)."""

from __future__ import annotations

from django.db import models


class StoragePool(models.Model):
    """A libvirt dir pool on a host, holding image base volumes and VM disks."""

    host = models.ForeignKey("cluster.Host", on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=100)
    path = models.CharField(max_length=500)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="pool_unique_per_host")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host}"


class Image(models.Model):
    """A bootable image: a base qcow2 volume and, for direct-kernel images, kernel, initrd and cmdline."""

    class BootMode(models.TextChoices):
        KERNEL = "kernel", "Direct kernel boot"
        DISK = "disk", "Firmware boot from disk"

    name = models.SlugField(max_length=60, unique=True)
    title = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    os_name = models.CharField("OS", max_length=100, blank=True)
    pool = models.ForeignKey(StoragePool, on_delete=models.PROTECT, related_name="images")
    volume_name = models.CharField(max_length=200)
    path = models.CharField(max_length=500)
    format = models.CharField(max_length=16, default="qcow2")
    size_bytes = models.BigIntegerField(default=0, help_text="Virtual size of the base image.")
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
    is_public = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self) -> str:
        return self.title or self.name


class Volume(models.Model):
    """A disk in a pool: a thin qcow2 overlay on an image (or a blank volume).

    Storage does not know VMs: a VM's use of a volume is its attachment (vms.VMDisk: target, bus,
    read-only), so a disk can outlive, move between or be shared by VMs as the storage work grows.
    """

    pool = models.ForeignKey(StoragePool, on_delete=models.PROTECT, related_name="volumes")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=500, blank=True)
    format = models.CharField(max_length=16, default="qcow2")
    capacity_gib = models.PositiveIntegerField()
    backing_image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="volumes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["pool", "name"], name="volume_unique_per_pool")]

    def __str__(self) -> str:
        return self.name

"""VM pools (oVirt-style): a pool keeps VMs of one image and size ready; users take one and return it."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class VMPool(models.Model):
    """A pool of like VMs. Its VMs are owned by `owner` (the administrator who made the pool, or one an
    administrator names) and charge that owner's personal quota, never the taker's."""

    name = models.SlugField(max_length=40, unique=True, help_text="Pool VMs are named <pool>-NN.")
    description = models.CharField(max_length=200, blank=True)
    image = models.ForeignKey("storage.Image", on_delete=models.PROTECT, related_name="vm_pools",
                              help_text="Image or template every pool VM is a thin clone of.")
    flavor = models.ForeignKey("vms.Flavor", null=True, blank=True, on_delete=models.PROTECT, related_name="vm_pools")
    vcpus = models.PositiveIntegerField(null=True, blank=True, help_text="Without a flavor (blank: the image's).")
    memory_mib = models.PositiveIntegerField(null=True, blank=True)
    disk_gib = models.PositiveIntegerField(null=True, blank=True)
    prestarted = models.PositiveIntegerField(default=1, help_text="Free VMs kept created and running (K).")
    max_size = models.PositiveIntegerField(default=5, help_text="Most VMs the pool ever has, taken or free.")
    stateless = models.BooleanField(default=True, help_text="A returned VM is reset to its image (changes discarded).")
    everyone = models.BooleanField(default=False, help_text="Every signed-in user may take a VM.")
    groups = models.ManyToManyField(Group, blank=True, related_name="vm_pools",
                                    help_text="Members of these groups may take a VM.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_vm_pools",
                              help_text="Owns the pool's VMs; their quota is this account's.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "VM pool"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PoolMember(models.Model):
    """A VM that belongs to a pool, and who holds it now (none: free)."""

    pool = models.ForeignKey(VMPool, on_delete=models.CASCADE, related_name="members")
    vm = models.OneToOneField("vms.VM", on_delete=models.CASCADE, related_name="pool_member")
    taken_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="taken_pool_vms")
    taken_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "pool VM"
        ordering = ["pool", "vm__name"]
        indexes = [models.Index(fields=["taken_by"], name="pool_member_taker")]

    def __str__(self) -> str:
        return f"{self.pool.name}: {self.vm.name}"

"""Many rows, cheaply: VMs with a NIC, a job and an audit event each, data disks and backups, written with
bulk_create only (no service, no libvirt). For query-count tests and in-process measurements of the reads.

`ScaleWorld.grow(n)` adds VMs up to `n` in total; the same world grows from 10 to 1,000 rows in a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import Group, User


@dataclass
class ScaleWorld:
    """Rows shared by every VM: one host, pool, image, flavor, network; an owner, a group member, a group."""

    owner: User
    member: User  # sees the VMs of `group` (every other VM is the group's)
    admin: User
    group: Group
    host: object
    pool: object
    image: object
    flavor: object
    network: object
    count: int = 0
    vm_ids: list[int] = field(default_factory=list)

    def grow(self, total: int, *, owner: User | None = None) -> None:
        """Add VMs (and their NIC, job, audit event; a data disk and a backup every 5th) up to `total`, owned
        by `owner` (default: the world's owner; half of them shared with its group)."""
        from backups.models import Backup
        from portal.models import AuditEvent, Job
        from storage.models import Volume
        from vms.models import VM, VMDisk, VMNic

        owner = owner or self.owner
        start, self.count = self.count, max(self.count, total)
        idx = range(start, self.count)
        statuses = ["running", "stopped", "paused"]
        vms = VM.objects.bulk_create(VM(
            name=f"vm-{i:06d}", owner=owner, group=self.group if i % 2 and owner == self.owner else None, host=self.host,
            image=self.image, flavor=self.flavor, vcpus=1, memory_mib=512, disk_gib=2,
            status=statuses[i % 3], power_state=statuses[i % 3], domain_name=f"scale-vm-{i}",
            description=f"scale VM {i}") for i in idx)
        self.vm_ids += [vm.pk for vm in vms]
        VMNic.objects.bulk_create(VMNic(
            vm=vm, network=self.network, mac="52:54:" + i.to_bytes(4, "big").hex(":"),
            status="attached", ip_address=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
            for i, vm in zip(idx, vms, strict=True))
        jobs = Job.objects.bulk_create(Job(
            kind="vm.start", status="succeeded", actor=owner, via="api", target_type="vm",
            target_id=str(vm.pk), target_name=vm.name) for vm in vms)
        AuditEvent.objects.bulk_create(AuditEvent(
            actor=owner, actor_name=owner.username, via="api", action="vm.start", target_type="vm",
            target_id=str(vm.pk), target_name=vm.name, job=job) for vm, job in zip(vms, jobs, strict=True))
        every5 = [(i, vm) for i, vm in zip(idx, vms, strict=True) if i % 5 == 0]
        volumes = Volume.objects.bulk_create(Volume(
            pool=self.pool, name=f"scale-data-{i}", capacity_gib=1, owner=owner,
            group=vm.group, label=f"data-{i}") for i, vm in every5)
        VMDisk.objects.bulk_create(VMDisk(vm=vm, volume=volume, target="vdb")
                                   for (_, vm), volume in zip(every5, volumes, strict=True))
        Backup.objects.bulk_create(Backup(
            vm=vm, vm_name=vm.name, owner=owner, group=vm.group, pool=self.pool, status="ready",
            created_by=owner) for _, vm in every5)


def scale_world(prefix: str = "scale") -> ScaleWorld:
    """The shared rows (no libvirt: the host's URI is never dialled by reads)."""
    from cluster.models import Host
    from networks.models import Network
    from storage.models import Image, StoragePool
    from vms.models import Flavor

    group = Group.objects.create(name=f"{prefix}-team")
    owner = User.objects.create_user(f"{prefix}-owner", password="pw")
    member = User.objects.create_user(f"{prefix}-member", password="pw")
    member.groups.add(group)
    owner.groups.add(group)
    admin = User.objects.create_user(f"{prefix}-admin", password="pw", is_staff=True, is_superuser=True)
    host = Host.objects.create(name=f"{prefix}-host", uri=f"test:///{prefix}-never-dialled", status="up",
                               cpus=64, memory_mib=1 << 20)
    pool = StoragePool.objects.create(host=host, name=f"{prefix}-pool", path=f"/nonexistent/{prefix}")
    image = Image.objects.create(name=f"{prefix}-image", title="Scale image", pool=pool, volume_name="img",
                                 path=f"/nonexistent/{prefix}/img", login_user="debian")
    flavor = Flavor.objects.create(name=f"{prefix}-small", vcpus=1, memory_mib=512, disk_gib=2)
    network = Network.objects.create(name=f"{prefix}-net", cidr="10.0.0.0/8", is_public=True)
    network.groups.add(group)
    return ScaleWorld(owner=owner, member=member, admin=admin, group=group, host=host, pool=pool, image=image,
                      flavor=flavor, network=network)

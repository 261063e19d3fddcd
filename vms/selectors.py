"""Reads that depend on who asks; everything goes through `vm_visible`, the one visibility rule."""

from __future__ import annotations

import hashlib
import uuid

from django.contrib.auth.models import Group, User
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from cluster.models import Host
from cluster.placement import HostLoad
from networks.models import Network
from portal.actors import Actor, is_admin, is_signed_in
from portal.choices import JobStatus
from portal.exceptions import NotFound
from portal.jobs.selectors import job_visible
from portal.models import AuditEvent, Job, PluginToken

from .access import granted
from .choices import VMStatus
from .models import VM, Flavor, Snapshot, VMNic
from .validation import parse_id


def vm_visible(*, user: Actor) -> QuerySet[VM]:
    """VMs `user` may see and act on: their own, their groups', or all for staff. Never deleted ones."""
    qs = VM.objects.exclude(status=VMStatus.DELETED).select_related("owner", "host", "image", "flavor", "group", "cdrom")
    if not is_signed_in(user):
        return qs.none()
    if is_admin(user):
        return qs
    # `group` is a foreign key: `group_id IN (the user's group ids)` is a subquery, never a join, so no row
    # comes twice and no DISTINCT over whole rows is needed (issue #13: it cost more than the page itself).
    rule = Q(owner=user) | Q(group__in=user.groups.all())
    extra = granted(user)  # grants other apps registered (vms.access: a pool VM's taker)
    return qs.filter(rule if extra is None else rule | extra)


def vm_list(*, user: Actor, status: str | None = None, search: str | None = None, owner: str | None = None,
            host: str | None = None) -> QuerySet[VM]:
    qs = vm_visible(user=user)
    if status:
        qs = qs.filter(status=status)
    if search:
        qs = qs.filter(Q(name__icontains=search) | Q(description__icontains=search))
    if owner and is_admin(user):
        qs = qs.filter(owner__username=owner)
    if host and is_admin(user):
        qs = qs.filter(host__name=host)
    return qs.order_by("name", "id")


def vm_get(*, user: Actor, vm_id: object) -> VM:
    """A VM the user may see, by id or uuid; others' VMs are indistinguishable from missing ones."""
    qs = vm_visible(user=user)
    text = str(vm_id).strip()
    try:
        if text.isdigit():  # ids; "²" or 30 digits are no VM's
            pk = parse_id(text)
            if pk is None:
                raise VM.DoesNotExist
            return qs.get(pk=pk)
        return qs.get(uuid=uuid.UUID(text))
    except (VM.DoesNotExist, ValueError):
        raise NotFound(f"VM {text[:64]} not found.") from None


def vm_get_by_name(*, user: Actor, name: str) -> VM:
    """A VM by name: the user's own first, then their groups' (used by Slack and the CLI)."""
    qs = vm_visible(user=user).filter(name=name)
    own = qs.filter(owner_id=getattr(user, "pk", None)).first()
    vm = own or qs.first()
    if vm is None:
        raise NotFound(f"No VM named {name[:63]!r}.")
    return vm


def vm_active_jobs(*, user: Actor) -> dict[str, Job]:
    """The newest queued or running job of each VM the user may see, by VM id (as text)."""
    active: dict[str, Job] = {}
    for job in job_visible(user=user).filter(status__in=JobStatus.ACTIVE, target_type="vm"):
        active.setdefault(job.target_id, job)
    return active


def vm_jobs(*, vm: VM) -> QuerySet[Job]:
    return Job.objects.filter(target_type="vm", target_id=str(vm.pk)).select_related("actor", "plugin")


def vm_snapshots(*, vm: VM) -> QuerySet:
    """A VM's snapshots, oldest first (the caller got `vm` through vm_get, so it is visible)."""
    return vm.snapshots.select_related("created_by").order_by("created_at", "id")


def vm_snapshot_get(*, vm: VM, key: Snapshot | int | str) -> Snapshot:
    """One of the VM's snapshots: by row or id (an int, or a string of digits: names never are), else
    by name. Another VM's snapshot is not found."""
    qs = vm_snapshots(vm=vm)
    if hasattr(key, "pk"):
        found = qs.filter(pk=key.pk).first()
    elif isinstance(key, int) or str(key).strip().isdigit():  # digits never name a snapshot
        pk = parse_id(key)
        found = qs.filter(pk=pk).first() if pk is not None else None
    else:
        found = qs.filter(name=str(key).strip()).first()
    if found is None:
        raise NotFound(f"{vm.name} has no snapshot {str(getattr(key, 'name', key))[:63]!r}.")
    return found


def vm_audit_events(*, vm: VM) -> QuerySet[AuditEvent]:
    """The audit trail of a VM (the caller got `vm` through vm_get, so it is visible)."""
    return AuditEvent.objects.filter(target_type="vm", target_id=str(vm.pk)).select_related("actor")


def flavor_list(*, user: Actor) -> QuerySet[Flavor]:
    """Size presets `user` may choose: public ones, all for staff."""
    qs = Flavor.objects.all()
    return qs if is_admin(user) else qs.filter(is_public=True)


def flavor_get(*, user: Actor, name_or_id: object) -> Flavor:
    """One flavor the user may choose, by name or numeric id."""
    qs = flavor_list(user=user)
    text = str(name_or_id).strip()
    pk = parse_id(text)
    flavor = qs.filter(pk=pk).first() if pk is not None else qs.filter(name=text).first()
    if flavor is None:
        raise NotFound(f"Flavor {text[:40]!r} not found.")
    return flavor


def vm_owned_ids(*, user: User) -> QuerySet:
    """Ids of the VMs (deleted ones too) owned by `user` or their groups: whose jobs they may see."""
    rule = Q(owner=user) | Q(group__in=user.groups.all())
    extra = granted(user)  # a pool VM's taker sees its jobs too (vms.access)
    return VM.objects.filter(rule if extra is None else rule | extra).order_by().values_list("pk", flat=True)


def _charged(*, user: User | None = None, group: Group | None = None) -> QuerySet[VM]:
    qs = VM.objects.filter(status__in=VMStatus.COUNTED)
    if group is not None:
        return qs.filter(group=group)
    return qs.filter(owner=user, group__isnull=True)


def vm_quota_usage(*, user: User | None = None, group: Group | None = None) -> dict[str, int]:
    """What the VMs charge to a user's personal quota (no group) or to a group's (registered with quotas)."""
    if group is None and getattr(user, "pk", None) is None:
        return {}
    agg = _charged(user=user, group=group).aggregate(
        vms=Count("id"),
        vcpus=Coalesce(Sum("vcpus"), 0),
        memory_mib=Coalesce(Sum("memory_mib"), 0),
        disk_gib=Coalesce(Sum("disk_gib"), 0),
    )
    agg["disk_gib"] += snapshot_space_gib(user=user, group=group)  # snapshots hold disk space too (issue #11)
    return dict(agg)


def vm_host_loads() -> dict[int, HostLoad]:
    """Memory, vCPUs and VMs committed per host by the VMs that still hold resources (for placement)."""
    # One aggregate over the vm_host_load index (every state but deleted holds resources), as plain tuples.
    rows = (VM.objects.exclude(status=VMStatus.DELETED).order_by().values("host_id")
            .annotate(memory=Sum("memory_mib"), vcpus=Sum("vcpus"), n=Count("id"))
            .values_list("host_id", "memory", "vcpus", "n"))
    return {host_id: HostLoad(memory or 0, vcpus or 0, n) for host_id, memory, vcpus, n in rows}


# --- NICs and how to reach a VM -------------------------------------------------------------------

def vm_nics(*, vm: VM) -> list[VMNic]:
    """The VM's NICs in device order, with their networks."""
    return list(vm.nics.select_related("network").order_by("created_at", "id"))


def vm_ssh_command(*, vm: VM, nics: list[VMNic] | None = None) -> str | None:
    """A ready `ssh` line: the image's login user at the first NIC address known (None until a lease is seen,
    or for images with no SSH login)."""
    image = vm.image
    login = image.login_user if image is not None else ""
    if not login or vm.status not in VMStatus.ACTIVE:
        return None
    for nic in nics if nics is not None else vm_nics(vm=vm):
        if nic.ip_address:
            return f"ssh {login}@{nic.ip_address}"
    return None


def network_nic_users(network: Network, host: Host | None = None) -> list[str]:
    """What uses a network, for networks.usage: "vm (owner)" per NIC of a VM that still exists."""
    qs = VMNic.objects.filter(network=network).exclude(vm__status=VMStatus.DELETED).select_related("vm__owner")
    if host is not None:
        qs = qs.filter(vm__host=host)
    return [f"{nic.vm.name} ({nic.vm.owner.get_username()})" for nic in qs.order_by("vm__name")]


def vm_nic_get(*, vm: VM, key: object) -> VMNic:
    """One NIC of the VM, by id or MAC."""
    text = str(key).strip().lower()
    qs = vm.nics.select_related("network")
    pk = parse_id(text)
    found = qs.filter(pk=pk).first() if pk is not None else qs.filter(mac=text.replace("-", ":")).first()
    if found is None:
        raise NotFound(f"{vm.name} has no NIC {text[:40]}.")
    return found


def vm_nic_states(*, vms: QuerySet | list[VM]) -> dict[int, tuple[str, str]]:
    """Per VM: a short fingerprint of what its NIC panel shows (networks, MACs, models, boot orders, states, addresses) and its
    first known address. Live pages compare the fingerprint to know when to fetch the panel again: the
    monitor and the job workers change NICs in other processes, where a pushed event may not reach."""
    rows: dict[int, list[str]] = {}
    first: dict[int, str] = {}
    qs = VMNic.objects.filter(vm__in=vms).order_by("vm_id", "created_at", "id")
    for vm_id, nic_id, network_id, mac, model, props, status, ip in qs.values_list(
            "vm_id", "id", "network_id", "mac", "model", "properties", "status", "ip_address"):
        order = (props or {}).get("boot_order", "")
        rows.setdefault(vm_id, []).append(f"{nic_id}/{network_id}/{mac}/{model}/{order}/{status}/{ip or ''}")
        if ip and vm_id not in first:
            first[vm_id] = ip
    return {vm_id: (hashlib.blake2s(";".join(parts).encode(), digest_size=6).hexdigest(), first.get(vm_id, ""))
            for vm_id, parts in rows.items()}


# --- snapshot space (issue #11) ------------------------------------------------------------------

def snapshot_space_gib(*, user: User | None = None, group: Group | None = None) -> int:
    """The space the snapshots of a subject's VMs hold (Snapshot.size_bytes: measured when taken, the
    estimate while being taken), rounded up to whole GiB for the subject: part of the disk quota's use."""
    total = Snapshot.objects.filter(vm__in=_charged(user=user, group=group)).aggregate(
        n=Coalesce(Sum("size_bytes"), 0))["n"]
    return -(-int(total) // 1024**3)


def vm_for_plugin(plugin: PluginToken, key: str) -> VM:
    """A VM an external plugin may attach jobs to, by id, UUID or name: any VM for an all-targets plugin,
    else the VMs of its groups; never a deleted one. Others are NotFound alike (portal.plugins)."""
    qs = VM.objects.exclude(status=VMStatus.DELETED)
    if not plugin.all_targets:
        qs = qs.filter(group__in=plugin.groups.all())
    text = str(key).strip()
    if text.isdigit():
        pk = parse_id(text)
        vm = qs.filter(pk=pk).first() if pk is not None else None
    else:
        try:
            vm = qs.filter(uuid=uuid.UUID(text)).first()
        except ValueError:
            vm = qs.filter(name=text[:63]).order_by("pk").first()
    if vm is None:
        raise NotFound(f"VM {text[:64]} not found.")
    return vm

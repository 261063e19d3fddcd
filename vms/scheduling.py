"""The VM side of the Scheduler API: what a VM asks of a host (cluster.scheduler.VMRequest), and what the
balancers see of VMs. cluster sits below vms, so vms registers these with it (vms.apps).

- `vm_request(vm)`: sizes, pinned hosts, required tags, affinity groups (where the other members run),
  the hosts that carry the VM's networks.
- `vm_requests(vm_ids)`: the same for a few VMs at once (the balancers' target check).
- `placed_vms_on(host_ids)`: the VMs on some hosts, as flat rows (one query, no ORM objects).
- `migration_target_loads()`: a migrating VM also counts on its destination, read from its active
  "vm.migrate" job's params["target_host_id"] (the migration service writes it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from cluster.placement import HostLoad, PlacedVM
from cluster.scheduler import AffinityRule, VMRequest
from networks.models import Network
from networks.selectors import hosts_with_networks
from portal.choices import JobStatus
from portal.models import Job

from .choices import VMStatus
from .models import VM, AffinityGroup, VMNic

MIGRATE_JOB = "vm.migrate"


def networks_constraint(networks: list[Network]) -> tuple[frozenset[int] | None, str]:
    """The hosts that carry every one of `networks` (None: any host) and the phrase the refusal uses."""
    qs = hosts_with_networks(networks)
    if qs is None:
        return None, ""
    names = ", ".join(n.name for n in networks)
    return frozenset(qs.values_list("pk", flat=True)), f"carries the network{'s' if len(networks) > 1 else ''} {names}"


def _affinity(vm_ids: list[int]) -> dict[int, list[AffinityRule]]:
    """Per VM: its affinity groups, with the hosts the groups' other live members are on (two queries)."""
    through = AffinityGroup.vms.through
    links = list(through.objects.filter(vm_id__in=vm_ids).values_list("affinitygroup_id", "vm_id"))
    if not links:
        return {}
    group_ids = {g for g, _ in links}
    groups = {g.pk: g for g in AffinityGroup.objects.filter(pk__in=group_ids).only("name", "positive", "enforcing")}
    members: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for gid, member_id, host_id in (through.objects.filter(affinitygroup_id__in=group_ids)
                                    .exclude(vm__status__in=[VMStatus.DELETED, VMStatus.DELETING])
                                    .values_list("affinitygroup_id", "vm_id", "vm__host_id")):
        members[gid].append((member_id, host_id))
    rules: dict[int, list[AffinityRule]] = defaultdict(list)
    for gid, vm_id in links:
        group = groups[gid]
        hosts = frozenset(h for m, h in members[gid] if m != vm_id and h is not None)
        rules[vm_id].append(AffinityRule(group=group.name, positive=group.positive, enforcing=group.enforcing,
                                         host_ids=hosts))
    return rules


def vm_requests(vm_ids: Iterable[int], *, for_migration: bool = True) -> dict[int, VMRequest]:
    """What each VM asks of a host, by VM id (a few queries for the lot)."""
    ids = list(vm_ids)
    rows = list(VM.objects.filter(pk__in=ids).values_list("pk", "name", "vcpus", "memory_mib", "host_id",
                                                          "required_tags"))
    pinned: dict[int, set[int]] = defaultdict(set)
    for vm_id, host_id in VM.pinned_hosts.through.objects.filter(vm_id__in=ids).values_list("vm_id", "host_id"):
        pinned[vm_id].add(host_id)
    nets: dict[int, list[Network]] = defaultdict(list)
    for nic in VMNic.objects.filter(vm_id__in=ids).select_related("network").order_by("id"):
        if nic.network is not None and nic.network not in nets[nic.vm_id]:
            nets[nic.vm_id].append(nic.network)
    affinity = _affinity(ids)
    out: dict[int, VMRequest] = {}
    for pk, name, vcpus, memory, host_id, tags in rows:
        allowed, why = networks_constraint(nets.get(pk, []))
        out[pk] = VMRequest(
            vcpus=vcpus, memory_mib=memory, vm_id=pk, name=name,
            current_host_id=host_id if for_migration else None,
            required_tags=frozenset(str(t) for t in (tags or [])),
            pinned_host_ids=frozenset(pinned.get(pk, ())), allowed_host_ids=allowed, allowed_reason=why,
            affinity=tuple(affinity.get(pk, ())))
    return out


def vm_request(vm: VM, *, for_migration: bool = False) -> VMRequest:
    """What `vm` asks of a host. `for_migration`: its current host is the source (never chosen)."""
    return vm_requests([vm.pk], for_migration=for_migration)[vm.pk]


def placed_vms_on(host_ids: Iterable[int]) -> list[PlacedVM]:
    """The VMs that hold resources on `host_ids` (one flat query): what balancers may move."""
    return [PlacedVM(id=pk, host_id=host_id, memory_mib=memory, vcpus=vcpus, name=name,
                     migrating=status == VMStatus.MIGRATING)
            for pk, host_id, memory, vcpus, name, status in
            VM.objects.filter(host_id__in=list(host_ids), status__in=VMStatus.COUNTED)
            .values_list("pk", "host_id", "memory_mib", "vcpus", "name", "status")]


def migration_target_loads() -> dict[int, HostLoad]:
    """What migrating VMs hold on their destinations (their source's share is in vm_host_loads)."""
    targets: dict[int, HostLoad] = {}
    migrating = Job.objects.filter(kind=MIGRATE_JOB, status__in=JobStatus.ACTIVE, target_type="vm")
    wanted: dict[int, int] = {}
    for target_id, params in migrating.values_list("target_id", "params"):
        host = (params or {}).get("target_host_id")
        if str(target_id).isdigit() and isinstance(host, int):
            wanted[int(target_id)] = host
    if not wanted:
        return targets
    for pk, memory, vcpus in VM.objects.filter(pk__in=wanted, status=VMStatus.MIGRATING).values_list(
            "pk", "memory_mib", "vcpus"):
        was = targets.get(wanted[pk], HostLoad())
        targets[wanted[pk]] = HostLoad(was.memory_mib + memory, was.vcpus + vcpus, was.vms + 1)
    return targets

"""The VM side of the Scheduler API: what a VM asks of a host (cluster.scheduler.VMRequest), and what the
balancers see of VMs. cluster sits below vms, so vms registers these with it (vms.apps).

- `vm_request(vm)`: sizes, pinned hosts, required tags, affinity groups (where the other members run),
  the hosts that carry the VM's networks.
- `vm_requests(vm_ids)`: the same for a few VMs at once (the balancers' target check).
- `placed_vms_on(host_ids)`: the VMs on some hosts, as flat rows (one query, no ORM objects).
- `migration_target_loads()`: a migrating VM also counts on its destination, read from its active
  "vm.migrate" job's params["target_host_id"] (the migration service writes it).
- `vm_scheduling_update(...)`: the administrators' per-VM settings (HA, HA priority, pinned hosts,
  required tags), validated by `vm_scheduling_clean`, audited as `vm.scheduling`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from cluster.hostconfig import validate_tags
from cluster.models import Cluster, Host
from cluster.placement import HostLoad, PlacedVM
from cluster.scheduler import AffinityRule, VMRequest
from networks.models import Network
from networks.selectors import hosts_with_networks
from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.choices import JobStatus
from portal.exceptions import NotFound, ValidationFailed
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


# --- per-VM scheduling settings (administrators): HA, HA priority, pinned hosts, required tags ----------

SCHEDULING_FIELDS = ("highly_available", "ha_priority", "pinned_hosts", "required_tags")
SCHEDULING_ACTION = "vm.scheduling"


@dataclass(frozen=True)
class SchedulingResult:
    """What vm_scheduling_update did: the VM, one line for the user, the settings that changed (as the
    audit shows them) and the warnings (the settings were saved; these say what they do not do yet)."""

    vm: VM
    message: str
    changed: dict[str, Any]
    warnings: tuple[str, ...] = ()


def _pinned_clean(vm: VM, value: Iterable[Host | str | int] | str) -> list[Host]:
    """The hosts named (by name, id or Host): they must exist, be in the VM's cluster and be enabled.
    Every wrong one is named in one error on `pinned_hosts`."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Iterable):
        raise ValidationFailed("Pinned hosts are a list of host names.", field="pinned_hosts")
    cluster_id = Host.objects.filter(pk=vm.host_id).values_list("cluster_id", flat=True).first()
    cluster = Cluster.objects.filter(pk=cluster_id).first() if cluster_id is not None else None
    hosts: list[Host] = []
    errors: list[str] = []
    hosts_qs = Host.objects.select_related("cluster")
    for key in value:
        if isinstance(key, str):
            key = key.strip()
        if key in ("", None):
            continue
        shown = key.name if isinstance(key, Host) else str(key)[:60]
        if isinstance(key, Host):
            host = hosts_qs.filter(pk=key.pk).first()
        elif (isinstance(key, int) and not isinstance(key, bool)) or (
                isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 18):
            # an id; a host may also be named with digits only
            host = hosts_qs.filter(pk=int(key)).first() or hosts_qs.filter(name=str(key)).first()
        else:
            host = hosts_qs.filter(name=str(key)).first()
        if host is None:
            errors.append(f"No host {shown!r}.")
        elif host.cluster_id != cluster_id:
            where = host.cluster.name if host.cluster else "no cluster"
            errors.append(f"Host {host.name} is in {where}, not in {vm.name}'s cluster "
                          f"{cluster.name if cluster else '(none)'}: a VM runs only on hosts of its cluster.")
        elif not host.enabled:
            errors.append(f"Host {host.name} is disabled: enable it before pinning VMs to it.")
        elif host not in hosts:
            hosts.append(host)
    if errors:
        raise ValidationFailed({"pinned_hosts": errors})
    return hosts


def _priority_clean(value: object) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit() and len(value.strip()) <= 6:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValidationFailed("The HA priority is a whole number from 0 to 100 (higher restarts first).",
                               field="ha_priority")
    return value


def vm_scheduling_clean(*, vm: VM, changes: dict[str, Any]) -> dict[str, Any]:
    """Validated values for some of SCHEDULING_FIELDS (all errors at once, by field); None values are
    left out (unchanged). What the admin form checks before saving and what the service checks again."""
    unknown = set(changes) - set(SCHEDULING_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown scheduling setting(s): {', '.join(sorted(unknown))}.")
    clean: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in changes.items():
        if value is None:
            continue
        try:
            if name == "highly_available":
                if not isinstance(value, bool):
                    raise ValidationFailed("Highly available is true or false.", field=name)
                clean[name] = value
            elif name == "ha_priority":
                clean[name] = _priority_clean(value)
            elif name == "pinned_hosts":
                clean[name] = _pinned_clean(vm, value)
            else:
                clean[name] = validate_tags(value, field="required_tags")
        except ValidationFailed as exc:
            for field, msgs in exc.errors.items():
                errors.setdefault(name if field == "__all__" else field, []).extend(msgs)
    if errors:
        raise ValidationFailed(errors)
    return clean


def _shown(name: str, value: Any) -> str:
    if name == "highly_available":
        return "highly available" if value else "not highly available"
    if name == "ha_priority":
        return f"HA priority {value}"
    if name == "pinned_hosts":
        return f"pinned to {', '.join(value)}" if value else "not pinned (any host of its cluster)"
    return f"requires the tags {', '.join(value)}" if value else "requires no tags"


def _warnings(vm: VM, pinned: list[Host], changed: dict[str, Any]) -> list[str]:
    """What the saved settings do not do yet (they are saved anyway)."""
    from .cluster_ops import local_storage  # (cluster_ops imports this module)

    out: list[str] = []
    host = Host.objects.select_related("cluster").get(pk=vm.host_id)
    placed = vm.status not in (VMStatus.CREATING, VMStatus.DELETING)
    if placed and ("pinned_hosts" in changed or "required_tags" in changed):
        reasons = []
        if pinned and host.pk not in {h.pk for h in pinned}:
            reasons.append("is not among its pinned hosts")
        missing = sorted(set(vm.required_tags or []) - set(host.tags or []))
        if missing:
            reasons.append(f"lacks the tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if reasons:
            out.append(f"{vm.name} stays on {host.name}, which {' and '.join(reasons)}: the settings apply at "
                       "its next placement or migration (it is not moved now).")
    if changed.get("required_tags"):
        candidates = (Host.objects.filter(cluster_id=host.cluster_id, enabled=True) if host.cluster_id is not None
                      else Host.objects.filter(pk=host.pk))
        if pinned:
            candidates = candidates.filter(pk__in=[h.pk for h in pinned])
        wanted = set(vm.required_tags)
        if not any(wanted <= set(tags or []) for tags in candidates.values_list("tags", flat=True)):
            out.append(f"No enabled host {vm.name} may use carries the tags {', '.join(sorted(wanted))}: it cannot "
                       "be placed, migrated or restarted until one does.")
    if vm.highly_available and ("highly_available" in changed or "pinned_hosts" in changed):
        local = local_storage(vm)
        if local:
            out.append(f"HA needs shared storage (a pool marked shared): {vm.name} has disks on host-local storage "
                       f"({', '.join(local)}), so it cannot restart on another host while they stay there.")
        if host.cluster is not None and not host.cluster.ha_enabled:
            out.append(f"HA is switched off in cluster {host.cluster.name}: {vm.name} is not restarted elsewhere "
                       "until it is switched on.")
        if pinned and len(pinned) == 1 and pinned[0].pk == host.pk:
            out.append(f"{vm.name} is pinned to its own host only, so HA has nowhere else to restart it.")
    return out


def vm_scheduling_update(*, actor: Actor, via: str, vm: VM | int, highly_available: bool | None = None,
                         ha_priority: int | None = None, pinned_hosts: list[Host | str | int] | str | None = None,
                         required_tags: list[str] | str | None = None) -> SchedulingResult:
    """Set where a VM may run and whether HA restarts it (administrators only: these decide which hosts
    carry whose VMs). None leaves a setting as it is; `pinned_hosts=[]` unpins, `required_tags=[]` clears.

    Validated like the hosts' own settings (pinned hosts exist, are in the VM's cluster and enabled; tags
    as host tags), one transaction under the VM's row lock, one `vm.scheduling` audit event with what
    changed. Nothing moves now: a pin or tag the VM's current host does not satisfy applies at its next
    placement or migration, and HA with disks on host-local storage is allowed — both are warnings in the
    result and the audit. Unlike the VM actions, a VM whose host is unreachable is not refused: this is a
    record only (no host is called), and marking such a VM highly available is how it gets restarted
    once its host is confirmed down.
    """
    require_admin(actor, "Only administrators change where a VM may run and whether HA restarts it.")
    pk = vm.pk if isinstance(vm, VM) else vm
    given = {"highly_available": highly_available, "ha_priority": ha_priority, "pinned_hosts": pinned_hosts,
             "required_tags": required_tags}
    with transaction.atomic():
        locked = VM.objects.select_for_update().filter(pk=pk).exclude(status=VMStatus.DELETED).first()
        if locked is None:
            raise NotFound(f"VM {pk} not found.")
        clean = vm_scheduling_clean(vm=locked, changes=given)
        current_pins = list(locked.pinned_hosts.order_by("name"))
        changed: dict[str, Any] = {}
        for name in ("highly_available", "ha_priority", "required_tags"):
            if name in clean and getattr(locked, name) != clean[name]:
                changed[name] = clean[name]
                setattr(locked, name, clean[name])
        pins = current_pins
        if "pinned_hosts" in clean and {h.pk for h in clean["pinned_hosts"]} != {h.pk for h in current_pins}:
            pins = sorted(clean["pinned_hosts"], key=lambda h: h.name)
            changed["pinned_hosts"] = [h.name for h in pins]
            locked.pinned_hosts.set(pins)
        if not changed:
            return SchedulingResult(locked, f"No change to {locked.name}'s scheduling settings.", {})
        fields = [n for n in changed if n != "pinned_hosts"]
        if fields:
            locked.save(update_fields=[*fields, "updated_at"])
        warnings = tuple(_warnings(locked, pins, changed))
        message = f"{locked.name}: " + "; ".join(_shown(k, v) for k, v in changed.items()) + "."
        audit(actor=actor, via=via, action=SCHEDULING_ACTION, target=locked,
              message=" ".join([message, *warnings]), data={**changed, "warnings": list(warnings)})
    return SchedulingResult(locked, message, changed, warnings)

"""The scheduling pipeline: host snapshots, filters, weights, the explanation; and balancing passes.

Reads are few and flat whatever the size of the cluster: the hosts in scope (one values query), the
committed loads (one aggregate query per registered provider), the clusters' policies (one query);
balancing adds the VMs on the cluster's hosts (one values query) and the ping-pong guard.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from cluster.models import Cluster, Host
from cluster.placement import HostLoad, PlacedVM, host_loads, placed_vms

from . import Move, NoHostAvailable, Placement, VMRequest
from .base import DEFAULT_PROPERTIES, BalanceContext, Context, Filter, HostView
from .policies import Policy
from .registry import migrated_since, registry, requests_for

MAX_NAMES = 20  # hosts named per filter and in the weights table of an explanation
MAX_NAMES_IN_REFUSAL = 5
DEFAULT_POLICY = "evenly_distributed"

_HOST_FIELDS = ("id", "name", "cluster_id", "status", "enabled", "cpus", "memory_mib", "free_memory_mib", "tags_text",
                "cpu_usage_percent")


# --- snapshots ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _tags(text: str | None) -> frozenset[str]:
    """A host's tags from their JSON text: a cluster has few distinct tag sets, each parsed once."""
    if not text or text == "[]":
        return frozenset()
    try:
        value = json.loads(text)
    except ValueError:
        return frozenset()
    return frozenset(str(t) for t in value) if isinstance(value, list) else frozenset()


def _views(rows: Iterable[tuple], loads: dict[int, HostLoad]) -> list[HostView]:
    empty = HostLoad()
    views = []
    for hid, name, cluster_id, status, enabled, cpus, memory, free, tags, cpu_use in rows:
        load = loads.get(hid, empty)
        views.append(HostView(
            id=hid, name=name, cluster_id=cluster_id, status=status, enabled=enabled, cpus=cpus or 0,
            memory_mib=memory or 0, free_memory_mib=free or 0, tags=_tags(tags),
            committed_memory_mib=load.memory_mib, committed_vcpus=load.vcpus, vm_count=load.vms,
            cpu_usage_percent=cpu_use))
    return views


def _host_rows(scope: QuerySet[Host]) -> Iterable[tuple]:
    """The hosts in scope as flat rows; tags as their JSON text (parsed once per distinct value by _tags)."""
    return (scope.order_by().annotate(tags_text=Cast("tags", output_field=TextField()))
            .values_list(*_HOST_FIELDS))


def cluster_properties(policy: Policy, properties: dict[str, Any] | None) -> dict[str, Any]:
    """A cluster's effective properties: the defaults, the policy's own, then the cluster's."""
    merged = dict(DEFAULT_PROPERTIES)
    merged.update(policy.properties)
    merged.update(properties or {})
    return merged


def _policies(cluster_ids: set[int | None]) -> tuple[dict[int | None, tuple[str, dict[str, Any]]], str | None]:
    """{cluster id: (policy name, cluster's properties)} and the default cluster's policy name."""
    rows: dict[int | None, tuple[str, dict[str, Any]]] = {pk: (policy, props or {}) for pk, policy, props in
            Cluster.objects.filter(pk__in=[c for c in cluster_ids if c is not None])
            .values_list("pk", "policy", "policy_properties")}
    default = Cluster.objects.filter(name="Default").values_list("policy", flat=True).first()
    return rows, default


def _lock(scope: QuerySet[Host]) -> None:
    """Lock the rows of the clusters (and cluster-less hosts) in scope, in id order: concurrent placements
    into them wait here until this transaction ends, then read the loads this one committed."""
    cluster_ids = sorted({c for c in scope.values_list("cluster_id", flat=True).distinct() if c is not None})
    list(Cluster.objects.select_for_update().filter(pk__in=cluster_ids).order_by("pk").values_list("pk", flat=True))
    loose = scope.filter(cluster__isnull=True).order_by("pk")
    if loose.exists():
        list(Host.objects.select_for_update().filter(pk__in=loose.values("pk")).order_by("pk")
             .values_list("pk", flat=True))


# --- placement ------------------------------------------------------------------------------------

def _normalise(reason: str) -> str:
    return re.sub(r"\d+", "N", reason)


def _request_dict(request: VMRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"vcpus": request.vcpus, "memory_mib": request.memory_mib}
    if request.name:
        out["name"] = request.name
    if request.vm_id is not None:
        out["vm_id"] = request.vm_id
    if request.current_host_id is not None:
        out["current_host_id"] = request.current_host_id
    if request.required_tags:
        out["required_tags"] = sorted(request.required_tags)
    if request.pinned_host_ids:
        out["pinned_host_ids"] = sorted(request.pinned_host_ids)
    if request.allowed_host_ids is not None:
        out["allowed_hosts"] = len(request.allowed_host_ids)
        if request.allowed_reason:
            out["allowed_reason"] = request.allowed_reason
    if request.affinity:
        out["affinity"] = [{"group": r.group, "positive": r.positive, "enforcing": r.enforcing,
                            "hosts": len(r.host_ids)} for r in request.affinity]
    return out


def _filter_entry(name: str, removed: dict[int, str], names: dict[int, str]) -> dict[str, Any]:
    ordered = sorted(removed.items(), key=lambda kv: names[kv[0]])
    entry: dict[str, Any] = {"name": name, "removed": {names[h]: why for h, why in ordered[:MAX_NAMES]},
                             "count": len(removed)}
    if len(removed) > MAX_NAMES:
        entry["more"] = len(removed) - MAX_NAMES
        entry["reasons"] = dict(Counter(_normalise(why) for why in removed.values()).most_common(10))
    return entry


def _refusal(request: VMRequest, steps: list[tuple[Filter | None, dict[int, str]]], names: dict[int, str],
             scope_empty: bool, cluster: Cluster | None) -> tuple[str, str]:
    """(the headline, for everyone; the hosts and why each was ruled out, for administrators)."""
    if scope_empty:
        where = f" in cluster {cluster.name}" if cluster is not None else ""
        return f"No hypervisor host is registered{where} for new VMs", ""
    counted = [(f, removed) for f, removed in steps if removed]
    # The headline comes from the filter that removed the most hosts; host state only when nothing else did,
    # and later (more specific) filters win ties.
    ranked = sorted(enumerate(counted), key=lambda ic: (ic[1][0] is not None and ic[1][0].name != "host_state",
                                                        len(ic[1][1]), ic[0]), reverse=True)
    head_filter, head_removed = ranked[0][1]
    fmt = dict(vcpus=request.vcpus, memory_mib=request.memory_mib, name=request.name or "this VM",
               allowed_reason=request.allowed_reason or "has what the VM needs",
               required_tags=", ".join(sorted(request.required_tags)))
    headline = head_filter.refusal.format(**fmt) if head_filter is not None else "No host can take this VM"
    listed: list[str] = []
    seen: set[int] = set()
    for _f, removed in [(head_filter, head_removed)] + [c for c in counted if c[1] is not head_removed]:
        for hid, why in sorted(removed.items(), key=lambda kv: names[kv[0]]):
            if hid not in seen:
                seen.add(hid)
                listed.append(f"{names[hid]} {why}")
    total = len(listed)
    text = ", ".join(listed[:MAX_NAMES_IN_REFUSAL])
    if total > MAX_NAMES_IN_REFUSAL:
        text += f", and {total - MAX_NAMES_IN_REFUSAL} more"
    return headline, text


def run_schedule(*, request: VMRequest, cluster: Cluster | None, exclude_host_ids: frozenset[int], lock: bool,
                 hosts: QuerySet[Host] | None) -> Placement:
    scope = hosts if hosts is not None else Host.objects.all()
    if cluster is not None:
        scope = scope.filter(cluster=cluster)
    if lock:
        with transaction.atomic():  # a savepoint in the caller's transaction: the row locks last until it ends
            _lock(scope)
            return _place(request, scope, cluster, exclude_host_ids)
    return _place(request, scope, cluster, exclude_host_ids)


def _place(request: VMRequest, scope: QuerySet[Host], cluster: Cluster | None,
           exclude_host_ids: frozenset[int]) -> Placement:
    reg = registry()
    views = _views(_host_rows(scope), host_loads())
    names = {v.id: v.name for v in views}
    cluster_ids = {v.cluster_id for v in views}
    if cluster is not None:
        cluster_ids.add(cluster.pk)
    rows, default_policy = _policies(cluster_ids)
    if cluster is not None:
        policy_name = rows.get(cluster.pk, (cluster.policy, {}))[0]
    elif len(rows) == 1:
        policy_name = next(iter(rows.values()))[0]
    else:
        policy_name = default_policy or DEFAULT_POLICY
    policy = reg.policies.get(policy_name) or reg.policy(DEFAULT_POLICY)
    properties = {cid: cluster_properties(reg.policies.get(p) or policy, props) for cid, (p, props) in rows.items()}
    ctx = Context(policy=policy.name, properties=properties, hosts={v.id: v for v in views},
                  default_properties=cluster_properties(policy, None))

    steps: list[tuple[Filter | None, dict[int, str]]] = []
    entries: list[dict[str, Any]] = []
    alive = views
    if exclude_host_ids:
        removed = {v.id: "is excluded for this placement" for v in alive if v.id in exclude_host_ids}
        alive = [v for v in alive if v.id not in exclude_host_ids]
        steps.append((None, removed))
        entries.append(_filter_entry("excluded", removed, names))
    for fname in policy.filters:
        flt = reg.filters[fname]
        alive, removed = flt.filter(alive, request, ctx)
        steps.append((flt, removed))
        entries.append(_filter_entry(fname, removed, names))
        if not alive:
            break

    explanation: dict[str, Any] = {"policy": policy.name, "request": _request_dict(request), "filters": entries,
                                   "weights": {}, "chosen": None, "candidates": len(alive), "hosts": len(views)}
    if not alive:
        headline, hosts_text = _refusal(request, steps, names, not views, cluster)
        raise NoHostAvailable(f"{headline}; ask an administrator.", explanation=explanation,
                              hosts=hosts_text, headline=headline)

    weights = [(reg.weights[w], factor) for w, factor in policy.weights]
    scored: list[tuple[float, str, HostView, dict[str, float]]] = []
    for view in alive:
        parts: dict[str, float] = {}
        total = 0.0
        for weight, factor in weights:
            value = float(weight.score(view, request, ctx))
            parts[weight.name] = round(value, 2)
            total += factor * value
        parts["total"] = round(total, 2)
        scored.append((total, view.name, view, parts))
    scored.sort(key=lambda s: (s[0], s[1]))
    best = scored[0][2]
    explanation["weights"] = {name: parts for _t, name, _v, parts in scored[:MAX_NAMES]}
    explanation["factors"] = {w.name: factor for w, factor in weights}
    explanation["chosen"] = best.name
    explanation["chosen_id"] = best.id
    failures = ctx.cache.get("recent_failures") or {}
    if any(failures.get(v.id) for v in alive):  # read by the recent_failures weight: shown by host name
        explanation["recent_failures"] = {v.name: failures[v.id] for v in alive if failures.get(v.id)}
    explanation["reason"] = _chosen_reason(policy, best, scored, request)
    return Placement(host=Host.objects.get(pk=best.id), explanation=explanation)


def _chosen_reason(policy: Policy, best: HostView, scored: list, request: VMRequest) -> str:
    n = len(scored)
    used = best.memory_used_percent(request.memory_mib)
    others = f" of {n} hosts that fit" if n > 1 else " (the only host that fits)"
    what = {
        "evenly_distributed": f"least used{others}: {used:.0f}% of its memory committed with this VM",
        "power_saving": f"fullest{others} below the high threshold: {used:.0f}% of its memory committed with this VM",
        "vm_count": f"fewest VMs{others}: {best.vm_count} running",
        "none": f"first{others}",
    }.get(policy.name, f"lowest total weight{others}")
    return f"{best.name}: {what} (policy {policy.name})"


# --- balancing ------------------------------------------------------------------------------------

def run_balance(*, cluster: Cluster, recently_moved: Iterable[int] | None = None) -> list[Move]:
    reg = registry()
    policy = reg.policies.get(cluster.policy) or reg.policy(DEFAULT_POLICY)
    props = cluster_properties(policy, cluster.policy_properties)
    balancer = reg.balancers[policy.balancer]
    views = _views(_host_rows(Host.objects.filter(cluster=cluster)), host_loads())
    by_id = {v.id: v for v in views}
    for view in views:
        view.vms = []
    for vm in placed_vms(by_id):
        holder = by_id.get(vm.host_id)
        if holder is not None and holder.vms is not None:
            holder.vms.append(vm)
    in_flight = sum(1 for v in views for vm in (v.vms or []) if vm.migrating)
    guard = int(props.get("migration_guard_minutes", 10))
    recent = frozenset(set(recently_moved or ()) | migrated_since(guard))
    ctx = BalanceContext(policy=policy.name, properties={cluster.pk: props}, hosts=by_id, default_properties=props,
                         max_moves=max(0, int(props.get("max_concurrent_migrations", 2)) - in_flight),
                         recently_moved=recent)
    filters = [reg.filters[f] for f in policy.filters]
    requests: dict[int, VMRequest] = {}

    def fit_check(vm: PlacedVM, target: HostView) -> str | None:
        if vm.id not in requests:
            built = requests_for([vm.id]).get(vm.id)
            requests[vm.id] = built or VMRequest(vcpus=vm.vcpus, memory_mib=vm.memory_mib, vm_id=vm.id,
                                                 name=vm.name, current_host_id=vm.host_id)
        for flt in filters:
            reason = flt.check(target, requests[vm.id], ctx)
            if reason is not None:
                return f"{target.name} {reason}"
        return None

    ctx.fit_check = fit_check
    if ctx.max_moves <= 0:
        return []
    moves: list[Move] = []
    for move in balancer.propose(views, ctx):
        # The engine's own guard, whatever a plugin balancer does: budget, ping-pong, one move per VM.
        if len(moves) >= ctx.max_moves:
            break
        if move.vm_id in recent or any(m.vm_id == move.vm_id for m in moves):
            continue
        moves.append(move)
    return moves


# --- reading an explanation -----------------------------------------------------------------------

def explain_text(explanation: dict[str, Any]) -> str:
    """An explanation as a few lines for administrators (job log, admin pages, the refusal's detail)."""
    lines = []
    req = explanation.get("request", {})
    lines.append(f"Policy {explanation.get('policy')}: place {req.get('name') or 'a VM'} "
                 f"({req.get('vcpus')} vCPU, {req.get('memory_mib')} MiB) among {explanation.get('hosts', '?')} hosts.")
    for entry in explanation.get("filters", []):
        if not entry.get("count"):
            continue
        shown = "; ".join(f"{h} {why}" for h, why in entry.get("removed", {}).items())
        more = f"; and {entry['more']} more" if entry.get("more") else ""
        lines.append(f"Filter {entry['name']} removed {entry['count']}: {shown}{more}.")
    if explanation.get("chosen"):
        lines.append(f"Chosen {explanation['reason'] if explanation.get('reason') else explanation['chosen']}.")
        if explanation.get("recent_failures"):
            lines.append("Recent failed creates (avoided): " + "; ".join(
                f"{h} {n}" for h, n in explanation["recent_failures"].items()) + ".")
        ranked = list(explanation.get("weights", {}).items())[:5]
        if ranked:
            lines.append("Weights (lower is better): " + "; ".join(
                f"{h} {parts.get('total')}" for h, parts in ranked) + ".")
    else:
        lines.append("No host fits.")
    return "\n".join(lines)

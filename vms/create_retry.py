"""Creates that fail on their host for a host reason go to another host (issue #12).

A host whose creates keep failing looks emptiest and would attract every create. Two answers:

- the `vm.create` job, when its host fails it for a *host* reason (libvirt did not answer, or refused to
  make a volume, define or start the domain — a `HypervisorError` that is not transient), cleans up what
  it made there (domain, volumes), asks the scheduler for another host (the failed ones excluded), plans
  the VM's volumes in that host's pool and carries on there; at most settings.CREATE_RETRY_HOSTS other
  hosts. Errors that are the request's (a missing image, a refused copy) are not retried elsewhere.
- the failed hosts are kept on the job (`params["failed_hosts"]`), and `recent_host_failures` counts them
  for the scheduler's `recent_failures` weight (registered with cluster.scheduler.registry), so the next
  creates avoid such a host for settings.HOST_FAILURE_WINDOW_SECONDS.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.models import Host
from cluster.scheduler import NoHostAvailable, VMRequest, schedule
from portal.audit import audit
from portal.exceptions import Conflict, HypervisorError, PortalError, admin_message
from portal.hypervisor import get_driver
from portal.jobs import JobContext
from portal.models import AuditEvent, Job
from storage.domains import domain_host_ids
from storage.models import Image
from storage.services import pool_for_host, volume_destroy, volume_plan

from .choices import VMStatus
from .models import VM, VMDisk
from .scheduling import vm_request
from .services import vm_set_status

CREATE_JOB = "vm.create"
FAILED_HOSTS = "failed_hosts"  # job.params key: ids of the hosts this create failed on, in order


def is_host_failure(exc: PortalError) -> bool:
    """A failure of the host rather than of the request: the hypervisor's own (not a busy host, which the
    job runner retries in place)."""
    return isinstance(exc, HypervisorError) and not exc.transient


def failed_hosts(job: Job) -> list[int]:
    return [int(h) for h in (job.params or {}).get(FAILED_HOSTS, []) if str(h).isdigit()]


def _record_failure(ctx: JobContext, vm: VM) -> list[int]:
    tried = failed_hosts(ctx.job)
    if vm.host_id not in tried:
        tried.append(vm.host_id)
    ctx.job.params[FAILED_HOSTS] = tried
    Job.objects.filter(pk=ctx.job.pk).update(params=ctx.job.params, updated_at=timezone.now())
    return tried


def _host_names(ids: list[int]) -> str:
    names = dict(Host.objects.filter(pk__in=ids).values_list("pk", "name"))
    return ", ".join(names.get(h, f"#{h}") for h in ids)


def _clean_up_on(vm: VM) -> list[tuple]:
    """Remove the domain and the volumes the create made on the VM's host; returns the disk layout to make
    again elsewhere. Raises PortalError when the host cannot be cleaned (then nothing moves)."""
    status = Host.objects.filter(pk=vm.host_id).values_list("status", flat=True).first()
    if status is not None and status not in HostStatus.REACHABLE:
        raise HypervisorError(f"host {vm.host.name} is not responding")
    disks = list(vm.disks.select_related("volume__pool__host").order_by("target"))
    layout = [(d.target, d.bus, d.readonly, d.volume.name, d.volume.capacity_gib, d.volume.format,
               d.volume.backing_image_id, d.volume.copy_of_id) for d in disks]
    get_driver(vm.host.uri).undefine(str(vm.uuid))
    for disk in disks:
        volume_destroy(volume=disk.volume)  # the file in libvirt, the row, and (cascade) the attachment
    return layout


def create_retry_elsewhere(ctx: JobContext, vm: VM, exc: HypervisorError) -> VM:
    """After `exc` (a host failure) on the VM's host: place the VM on another host and return it, ready for
    the create to carry on there. Raises when it cannot: the original error when retries are off or the
    failed host cannot be cleaned up (the job's clean-up takes over), else a Conflict naming the hosts tried.
    """
    reason = admin_message(exc)
    tried = _record_failure(ctx, vm)
    failed_name = vm.host.name
    limit = max(0, int(settings.CREATE_RETRY_HOSTS))
    if limit == 0:
        raise exc
    if len(tried) > limit:
        raise Conflict(f"Could not create {vm.name}: it failed on {len(tried)} hosts ({_host_names(tried)}); "
                       f"on {failed_name}: {exc.message}", detail=exc.detail or reason) from exc
    request = vm_request(vm)
    domain, request = _keep_storage_domain(vm, request)  # storage domains (issue #11)
    exclude = frozenset(tried)

    def no_host(no: NoHostAvailable) -> PortalError:
        excluded = sum(f.get("count", 0) for f in no.explanation.get("filters", []) if f.get("name") == "excluded")
        if excluded >= no.explanation.get("hosts", 0):
            return exc  # no other host at all (a one-host portal): the host's own error says it best
        return Conflict(f"Could not create {vm.name}: host {failed_name} failed ({exc.message}) and no other host "
                        f"can take it: {no.message} Hosts tried: {_host_names(tried)}.",
                        detail=f"{reason}\n{no.detail}")

    try:
        schedule(request=request, exclude_host_ids=exclude)  # a look first: no clean-up when nobody can take it
    except NoHostAvailable as no:
        error = no_host(no)
        if error is exc:
            raise exc from None
        raise error from exc
    try:
        layout = _clean_up_on(vm)
    except PortalError as cleanup:
        ctx.log(f"Host {failed_name} failed: {reason}; what the create made there could not be removed "
                f"({cleanup.message}), so it is not retried on another host.")
        raise exc from None
    # Nothing of the VM is left on the failed host: the job's clean-up, should the rest fail, finds a
    # creating VM with nothing to remove.
    vm_set_status(vm, VMStatus.CREATING, last_error="", power_state="")
    try:
        with transaction.atomic():
            placement = schedule(request=request, exclude_host_ids=exclude, lock=True)
            host = placement.host
            pool = pool_for_host(host, domain)
            VM.objects.filter(pk=vm.pk).update(host=host, updated_at=timezone.now())
            images = Image.objects.in_bulk([i for row in layout for i in row[6:] if i is not None])
            for target, bus, readonly, name, capacity, fmt, backing_id, copy_id in layout:
                volume = volume_plan(pool=pool, name=name, capacity_gib=capacity, fmt=fmt,
                                     backing_image=images.get(backing_id) if backing_id else None,
                                     copy_of=images.get(copy_id) if copy_id else None)
                VMDisk.objects.create(vm=vm, volume=volume, target=target, bus=bus, readonly=readonly)
            ctx.job.params["placement"] = placement.explanation
            Job.objects.filter(pk=ctx.job.pk).update(params=ctx.job.params, updated_at=timezone.now())
    except NoHostAvailable as no:  # taken meanwhile by concurrent creates
        error = no_host(no)
        if error is exc:
            raise exc from None
        raise error from exc
    vm = VM.objects.select_related("host", "image", "owner").get(pk=vm.pk)
    ctx.log(f"Host {failed_name} failed: {reason}; retrying on {host.name}")
    ctx.log(f"Placed on {placement.explanation.get('reason') or host.name}")
    audit(actor=ctx.job.actor, via=ctx.job.via, action="vm.create.retry", target=vm, job=ctx.job,
          outcome=AuditEvent.Outcome.FAILED,
          message=f"Creating {vm.name} failed on host {failed_name} ({exc.message}); retrying on host {host.name}",
          data={"failed_host": failed_name, "reason": reason, "retry_host": host.name,
                "failed_hosts": _host_names(tried)})
    return vm


def recent_host_failures(seconds: int) -> dict[int, int]:
    """{host id: creates that failed there for a host reason in the last `seconds`} (one query over the
    create jobs of the window that carry failed hosts; registered as the scheduler's failure source)."""
    since = timezone.now() - timedelta(seconds=seconds)
    counts: dict[int, int] = {}
    for hosts in Job.objects.filter(kind=CREATE_JOB, updated_at__gte=since, params__has_key=FAILED_HOSTS) \
            .values_list(f"params__{FAILED_HOSTS}", flat=True):
        for host_id in hosts if isinstance(hosts, list) else []:
            if isinstance(host_id, int):
                counts[host_id] = counts.get(host_id, 0) + 1
    return counts


# --- storage domains (issue #11): a retried create keeps its disks in the VM's storage domain ---

def _keep_storage_domain(vm: VM, request: VMRequest) -> tuple[str | None, VMRequest]:
    """The storage domain the VM's root disk was planned in (None: the portal's own pool), and `request`
    narrowed to the hosts that see it."""
    name = (VMDisk.objects.filter(vm=vm, target="vda").values_list("volume__pool__name", flat=True).first())
    if not name or name == settings.STORAGE_POOL:
        return None, request
    hosts, why = domain_host_ids(name)
    allowed = hosts if request.allowed_host_ids is None else request.allowed_host_ids & hosts
    reason = f"{request.allowed_reason} and {why}" if request.allowed_reason else why
    return name, replace(request, allowed_host_ids=allowed, allowed_reason=reason)

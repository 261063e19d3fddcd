"""The end-user web portal: thin views that parse the request, call one service or selector, render.

Every view is wrapped by `portal.web.portal_view`, the one place domain errors become a 404 page
or a message and a redirect. Pages work without JavaScript; static/portal/live.js keeps states and
job progress current over the websocket (or /vms/status.json when it cannot connect).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from networks.selectors import network_default_for, network_usable
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed
from portal.live import live_context
from portal.units import mib
from portal.web import form_error, is_web_404, portal_view, safe_next
from quotas.selectors import quota_usage
from storage.domains import domain_list
from storage.models import Image, StoragePool
from storage.selectors import image_list

from . import disks, lifecycle, services
from .bulk import vm_bulk_create
from .choices import VMStatus
from .consumers import live_state
from .disk_doors import (
    data_volumes,
    disk_property_fields,
    is_data_disk,
    nic_property_fields,
    size_field,
    vm_disk_get,
    vm_disks,
)
from .forms import (
    CUSTOM,
    NAME_PATTERN_HTML,
    DiskAddForm,
    VMBulkCreateForm,
    VMCreateForm,
    VMTemplateForm,
    VMUpdateForm,
    posted_properties,
)
from .lease_policy import fmt_when, lease_rules
from .leases import lease_state, vm_lease_extend, vm_lease_set
from .migration import migration_hosts, vm_migrate
from .models import VMDisk, VMNic
from .properties import NIC, property_catalog
from .selectors import (
    flavor_list,
    vm_active_jobs,
    vm_audit_events,
    vm_get,
    vm_jobs,
    vm_list,
    vm_nic_get,
    vm_nic_states,
    vm_nics,
    vm_snapshots,
    vm_ssh_command,
)
from .validation import DESCRIPTION_MAX, NAME_HELP

PAGE_SIZE = 50

_ROW_ID = "987654321012345"  # stands for a VM's id in the list page's URLs, reversed once per page


def _row_urls(vms: list) -> None:
    """Each VM's links on the list page: every route reversed once per page, then the VM's id put in its
    place (issue #13: eight {% url %} per row were much of the page's cost)."""
    detail, delete = reverse("vms:detail", args=[_ROW_ID]), reverse("vms:delete", args=[_ROW_ID])
    actions = {name: reverse("vms:action", args=[_ROW_ID, name]) for name in ("start", "stop", "reboot", "force_off")}
    for vm in vms:
        pk = str(vm.pk)
        vm.detail_url, vm.delete_url = detail.replace(_ROW_ID, pk), delete.replace(_ROW_ID, pk)
        vm.action_urls = {name: url.replace(_ROW_ID, pk) for name, url in actions.items()}


def _annotate(vm, rules: dict[str, list[str]]):
    vm.allowed = {action for action, states in rules.items() if vm.status in states}
    return vm


# What a confirmation says for each action (from the lifecycle table, as in Slack).
ACTION_CONFIRM = {name: t.confirm for name, t in lifecycle.ACTIONS.items()}


def live_config() -> dict:
    """The VMs' part of every live page's config (registered with portal.live in VmsConfig.ready)."""
    return {
        "wsPath": "/ws/updates/",
        "statusUrl": reverse("vms:status"),
        "pollSeconds": 3,
        "rules": lifecycle.action_rules(),
        "actionLabels": {name: t.label for name, t in lifecycle.ACTIONS.items()},
        "statusLabels": dict(VMStatus.choices),
        "transitional": list(VMStatus.TRANSITIONAL),
    }


@login_required
@require_GET
@portal_view
def vm_list_view(request: HttpRequest) -> HttpResponse:
    """My VMs: quota usage bars, then one row per VM with its state and actions."""
    status = request.GET.get("status", "")
    status = status if status in VMStatus.values and status != VMStatus.DELETED else ""
    search = request.GET.get("q", "").strip()[:100]
    vms = vm_list(user=request.user, status=status or None, search=search or None)
    page = Paginator(vms, PAGE_SIZE).get_page(request.GET.get("page"))
    rules = lifecycle.action_rules()
    active = vm_active_jobs(user=request.user)
    rows = list(page)
    nic_states = vm_nic_states(vms=rows)
    _row_urls(rows)
    for vm in rows:
        _annotate(vm, rules)
        vm.active_job = active.get(str(vm.pk))
        vm.address = nic_states.get(vm.pk, ("", ""))[1]
        vm.lease = lease_state(vm, with_policy=False)
    return render(request, "vms/list.html", {
        "expiring": [vm for vm in rows if vm.lease and (vm.lease.soon or vm.lease.expired)],
        "page": page,
        "vms": rows,
        "next_path": request.get_full_path(),
        "usage": quota_usage(user=request.user),
        "status": status,
        "search": search,
        "filtered": bool(status or search),
        "status_choices": [(v, label) for v, label in VMStatus.choices if v != VMStatus.DELETED],
        "action_confirm": ACTION_CONFIRM,
        **live_context(),
    })


@login_required
@portal_view(fallback="vms:list")
def vm_bulk_create_view(request: HttpRequest) -> HttpResponse:
    """Create several: a name pattern and a count, one VM's choices; one parent job (vms.bulk)."""
    flavors = list(flavor_list(user=request.user))
    images = list(image_list(user=request.user))
    form = VMBulkCreateForm(request.POST or None, initial={"name_pattern": "lab-{n:02}", "count": "5",
                                                           "start_number": "1", "start": True})
    if request.method == "POST" and form.is_valid():
        try:
            result = vm_bulk_create(actor=request.user, via=Via.WEB, **form.service_kwargs())
        except PortalError as exc:
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, result.message)
            return redirect("jobs:detail", job_id=result.job.pk)
    default_image = next((i for i in images if i.is_default), images[0] if images else None)
    return render(request, "vms/bulk_create.html", {
        "form": form, "flavors": flavors, "images": images, "usage": quota_usage(user=request.user),
        "teams": list(request.user.groups.order_by("name")), "custom": CUSTOM,
        "selected_flavor": form["flavor"].value() or (flavors[0].name if flavors else CUSTOM),
        "selected_image": str(form["image"].value() or (default_image.pk if default_image else "")),
        "max_count": settings.BULK_MAX_COUNT, "limits": settings.VM_LIMITS,
    })


@login_required
@portal_view(fallback="vms:create")
def vm_create_view(request: HttpRequest) -> HttpResponse:
    """Create VM: a short form; the service validates, reserves quota and queues the create job."""
    flavors = list(flavor_list(user=request.user))
    images = list(image_list(user=request.user))
    networks = list(network_usable(user=request.user))
    default_network = network_default_for(user=request.user)
    # "Create VM from this image" (the image library) links here with ?image=<id>.
    wanted = request.GET.get("image", "")
    chosen = next((i for i in images if str(i.pk) == wanted), None)
    initial: dict[str, object] = {"image": wanted} if chosen is not None else {}
    if chosen is not None and chosen.kind == chosen.Kind.TEMPLATE and chosen.default_vcpus:
        # A template (sealed from a VM, or an OVA appliance) comes with its sizes: shown to confirm or change.
        initial.update(flavor=CUSTOM, vcpus=chosen.default_vcpus, memory_mib=chosen.default_memory_mib,
                       disk_gib=chosen.min_disk_gib)
    form = VMCreateForm(request.POST or None, flavors=flavors, images=images, networks=networks,
                        default_network=default_network, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            result = services.vm_create(actor=request.user, via=Via.WEB, **form.service_kwargs())
        except PortalError as exc:
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, result.message)
            return redirect("vms:detail", pk=result.vm.pk)
    usage = quota_usage(user=request.user)
    remaining = {u.resource: u.remaining for u in usage}
    teams = list(request.user.groups.order_by("name"))
    # What is left for each owner the VM can have (you, or one of your teams): the page's size check.
    quota_by_owner = {"": _quota_view(usage)}
    for team in teams:
        quota_by_owner[team.name] = _quota_view(quota_usage(group=team))
    for flavor in flavors:
        flavor.fits = (remaining["vms"] >= 1 and flavor.vcpus <= remaining["vcpus"]
                       and flavor.memory_mib <= remaining["memory_mib"] and flavor.disk_gib <= remaining["disk_gib"])
    selected_flavor = form["flavor"].value() or CUSTOM
    return render(request, "vms/create.html", {
        "form": form,
        "flavors": flavors,
        "images": images,
        "usage": usage,
        "remaining": remaining,
        "selected_flavor": selected_flavor,
        "selected_image": str(form["image"].value() or ""),
        "teams": teams,
        "selected_team": str(form["group"].value() or ""),
        "quota_by_owner": quota_by_owner,
        "custom": CUSTOM,
        "name_pattern": NAME_PATTERN_HTML,
        "name_help": NAME_HELP,
        "description_max": DESCRIPTION_MAX,
        "limits": settings.VM_LIMITS,
        "networks": networks,
        "default_network": default_network,
        "selected_networks": form.selected_networks(),
        "nics_max": settings.NICS_PER_VM,
        "cloud_init_images": [i for i in images if i.cloud_init],
        # Where the VM's disks go, when there is a choice (storage.domains: data domains only, no paths).
        "storage_domains": domain_list(content=StoragePool.Content.DATA),
        "selected_storage_domain": str(form["storage_domain"].value() or ""),
        "template_images": [i for i in images if i.kind == Image.Kind.TEMPLATE],
        "selected_clone": str(form["clone"].value() or ""),
        "user_data_max": settings.USER_DATA_MAX_BYTES,
        "lease_rules": lease_rules(None),
    }, status=400 if form.errors else 200)


def _quota_view(usage) -> dict:
    """Remaining quota per resource, with the words the page shows ("2 left of 3")."""
    def amount(u, value):
        return mib(value) if u.resource == "memory_mib" else f"{value}{' ' + u.unit if u.unit else ''}"

    return {u.resource: {"remaining": u.remaining, "left": amount(u, u.remaining),
                         "limit": f"left of {amount(u, u.limit)}"} for u in usage}


def _detail(request: HttpRequest, vm, *, edit_form: VMUpdateForm | None = None,
            template_form: VMTemplateForm | None = None, disk_form: DiskAddForm | None = None,
            status: int = 200) -> HttpResponse:
    rules = lifecycle.action_rules()
    _annotate(vm, rules)
    jobs = list(vm_jobs(vm=vm)[:20])
    events = list(vm_audit_events(vm=vm)[:30])
    if edit_form is None:
        edit_form = VMUpdateForm(initial={"name": vm.name, "description": vm.description})
    if template_form is None:
        template_form = VMTemplateForm(initial={"name": f"{vm.name}-template"[:60], "visibility": "private"})
    return render(request, "vms/detail.html", {
        "vm": vm,
        "lease": lease_state(vm),
        "lease_rules": lease_rules(vm.group),
        **_snapshot_context(vm),
        **_nic_context(vm, user=request.user),
        **_cdrom_context(vm, user=request.user),
        **_disk_context(vm, user=request.user, form=disk_form),
        "jobs": jobs,
        "events": events,
        "edit_form": edit_form,
        "template_form": template_form,
        "template_groups": list(request.user.groups.order_by("name")),
        "template_visibilities": Image.Visibility.choices,
        "can_template": vm.owner_id == request.user.pk or request.user.is_staff,
        "migrate_hosts": migration_hosts(vm) if request.user.is_staff else None,
        "name_pattern": NAME_PATTERN_HTML,
        "name_help": NAME_HELP,
        "description_max": DESCRIPTION_MAX,
        "action_help": {name: t.help for name, t in lifecycle.ACTIONS.items()},
        "action_confirm": ACTION_CONFIRM,
        "limits": settings.VM_LIMITS,
        "console_urls": {
            "screen": f"/consoles/vm/{vm.pk}/screen/",
            "terminal": f"/consoles/vm/{vm.pk}/terminal/",
        },
        **live_context(),
    }, status=status)


@login_required
@require_GET
@portal_view
def vm_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    """One VM: state and actions, overview, consoles, activity (jobs and audit), settings."""
    return _detail(request, vm_get(user=request.user, vm_id=pk))


@login_required
@require_POST
@portal_view
def vm_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Rename or re-describe a VM; errors are shown next to the fields of the settings form."""
    form = VMUpdateForm(request.POST)
    if form.is_valid():
        try:
            vm = services.vm_update(actor=request.user, via=Via.WEB, vm=pk, name=form.cleaned_data["name"],
                                    description=form.cleaned_data["description"])
        except ValidationFailed as exc:
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, f"Saved the settings of {vm.name}.")
            return redirect("vms:detail", pk=vm.pk)
    return _detail(request, vm_get(user=request.user, vm_id=pk), edit_form=form, status=400)


@login_required
@require_POST
@portal_view
def vm_action_view(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Start, Stop (ACPI), Force off, Reboot, Pause or Resume; the job carries it out."""
    result = services.vm_action(actor=request.user, via=Via.WEB, vm=pk, action=action)
    (messages.success if result.job else messages.info)(request, result.message)
    return redirect(safe_next(request, "vms:detail", pk=pk))


@login_required
@require_POST
@portal_view
def vm_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a VM and its disks, once the user has typed its name."""
    result = services.vm_delete(actor=request.user, via=Via.WEB, vm=pk,
                                confirm_name=request.POST.get("confirm_name", ""))
    messages.success(request, result.message)
    return redirect("vms:list")


@login_required
@require_POST
@portal_view
def vm_template_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Make template: seal the stopped VM into a template (a job); errors next to the form's fields."""
    form = VMTemplateForm(request.POST)
    if form.is_valid():
        try:
            job = services.vm_template_create(actor=request.user, via=Via.WEB, vm=pk, **form.service_kwargs())
        except PortalError as exc:
            if is_web_404(exc):
                raise
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, f"Making template {form.cleaned_data['name']}; it is listed among the "
                                      f"images once the job {job.pk} has finished.")
            return redirect(reverse("vms:detail", args=[pk]) + "#template")
    return _detail(request, vm_get(user=request.user, vm_id=pk), template_form=form, status=400)


@login_required
@require_POST
@portal_view
def vm_grow_disk_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Grow the VM's disk (confirmed in the page first); the job carries it out."""
    result = services.vm_grow_disk(actor=request.user, via=Via.WEB, vm=pk, disk_gib=request.POST.get("disk_gib", ""))
    (messages.success if result.job else messages.info)(request, result.message)
    return redirect(reverse("vms:detail", args=[pk]) + "#settings")


@login_required
@require_POST
@portal_view
def vm_extend_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Extend the lease (days more, or a new end) within policy; administrators may also set any end or remove it."""
    if request.POST.get("remove"):
        vm = vm_lease_set(actor=request.user, via=Via.WEB, vm=pk, expires_at=None)
        messages.success(request, f"The lease of {vm.name} is removed: it no longer expires.")
    elif request.POST.get("set"):
        vm = vm_lease_set(actor=request.user, via=Via.WEB, vm=pk, expires_at=request.POST.get("until", ""))
        messages.success(request, f"The lease of {vm.name} now ends {fmt_when(vm.expires_at)}.")
    else:
        vm = vm_lease_extend(actor=request.user, via=Via.WEB, vm=pk, days=request.POST.get("days") or None,
                             until=request.POST.get("until") or None)
        messages.success(request, f"The lease of {vm.name} now ends {fmt_when(vm.expires_at)}.")
    return redirect(reverse("vms:detail", args=[pk]) + "#lease")


@login_required
@require_POST
@portal_view
def vm_migrate_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Administrators: live-migrate the VM to the chosen host, or the best host; the job shows its progress."""
    vm = vm_get(user=request.user, vm_id=pk)
    result = vm_migrate(actor=request.user, via=Via.WEB, vm=vm, host=request.POST.get("host") or None)
    messages.success(request, result.message)
    return redirect(reverse("vms:detail", args=[pk]) + "#overview")


def _snapshot_context(vm) -> dict:
    snapshots = list(vm_snapshots(vm=vm))
    return {
        "snapshots": snapshots,
        "snapshots_busy": any(s.is_busy for s in snapshots),
        "snapshots_full": len(snapshots) >= settings.SNAPSHOTS_PER_VM,
        "snapshots_max": settings.SNAPSHOTS_PER_VM,
        "snapshots_allowed": vm.status in lifecycle.SNAPSHOT_STATES,
    }


@login_required
@require_http_methods(["GET", "POST"])
@portal_view
def snapshot_list_view(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the snapshots panel (live.js reloads it when a snapshot job ends). POST: take a snapshot."""
    vm = vm_get(user=request.user, vm_id=pk)
    if request.method == "POST":
        name = request.POST.get("name", "")  # blank: a name from the time; anything else as typed
        result = services.snapshot_create(
            actor=request.user, via=Via.WEB, vm=vm, name=name if name.strip() else None,
            description=request.POST.get("description", ""))
        messages.success(request, result.message)
        return redirect(reverse("vms:detail", args=[vm.pk]) + "#snapshots")
    return render(request, "vms/_snapshots.html", {"vm": vm, **_snapshot_context(vm)})


@login_required
@require_POST
@portal_view
def snapshot_op_view(request: HttpRequest, pk: int, sid: int, op: str) -> HttpResponse:
    """Revert to a snapshot or delete it (both confirmed in the page first)."""
    ops = {"revert": services.snapshot_revert, "delete": services.snapshot_delete}
    if op not in ops:
        raise Http404("No such snapshot operation.")
    messages.success(request, ops[op](actor=request.user, via=Via.WEB, vm=pk, snapshot=sid).message)
    return redirect(reverse("vms:detail", args=[pk]) + "#snapshots")


def _nic_context(vm, *, user) -> dict:
    """What the Network panel shows: the NICs, the ssh line, and what the Add NIC form offers."""
    nics = vm_nics(vm=vm)
    return {
        "nics": nics,
        "vm_address": next((n.ip_address for n in nics if n.ip_address), ""),
        "ssh_command": vm_ssh_command(vm=vm, nics=nics),
        "nics_sig": vm_nic_states(vms=[vm]).get(vm.pk, ("", ""))[0],
        "nics_running": vm.status in VMStatus.ACTIVE,
        "nics_busy": any(n.status != VMNic.Status.ATTACHED for n in nics),
        "nics_full": len(nics) >= settings.NICS_PER_VM,
        "nics_max": settings.NICS_PER_VM,
        "nics_allowed": vm.status in services.NIC_STATES,
        "nic_networks": list(network_usable(user=user)),
        "nic_models": VMNic.Model.choices,
        "nic_prop_fields": nic_property_fields(user=user),
        "nics_editable": vm.adopted_at is None,
    }


@login_required
@require_http_methods(["GET", "POST"])
@portal_view
def nic_list_view(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the Network panel (live.js fetches it again when the NICs change). POST: add a NIC."""
    vm = vm_get(user=request.user, vm_id=pk)
    if request.method == "POST":
        _nic, _job, message = services.vm_nic_add(
            actor=request.user, via=Via.WEB, vm=vm, network=request.POST.get("network", ""),
            model=request.POST.get("model") or VMNic.Model.VIRTIO)
        messages.success(request, message)
        return redirect(reverse("vms:detail", args=[vm.pk]) + "#network")
    response = render(request, "vms/_nics.html", {"vm": vm, **_nic_context(vm, user=request.user)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@portal_view
def nic_remove_view(request: HttpRequest, pk: int, nic_id: int) -> HttpResponse:
    """Remove a NIC (confirmed in the page first); the job detaches it."""
    _nic, _job, message = services.vm_nic_remove(actor=request.user, via=Via.WEB, vm=pk, nic=nic_id)
    messages.success(request, message)
    return redirect(reverse("vms:detail", args=[pk]) + "#network")


@login_required
@require_POST
@portal_view
def nic_update_view(request: HttpRequest, pk: int, nic_id: int) -> HttpResponse:
    """Change a NIC's model and/or boot order (vms.services.vm_nic_update). Every property of the NIC
    catalog is read, not only those the form shows, so one a rule forbids is refused by the service
    (an error message, as the disks panel's properties form), never ignored."""
    vm = vm_get(user=request.user, vm_id=pk)
    nic = vm_nic_get(vm=vm, key=nic_id)
    changed = posted_properties(request.POST, property_catalog(NIC), nic.properties)
    model = request.POST.get("model", "").strip()
    if not changed and model in ("", nic.model):
        messages.info(request, f"Nothing changed on NIC {nic.mac}.")
    else:
        _nic, _job, message = services.vm_nic_update(actor=request.user, via=Via.WEB, vm=vm, nic=nic,
                                                     model=model or None, properties=changed)
        messages.success(request, message)
    return redirect(reverse("vms:detail", args=[vm.pk]) + "#network")


def _cdrom_context(vm, *, user) -> dict:
    """What the CD-ROM panel shows: the drive and its media, and the ISOs the user may insert."""
    running = vm.status in VMStatus.ACTIVE
    return {
        "cdrom_isos": list(image_list(user=user).filter(kind=Image.Kind.ISO)),
        "cdrom_running": running,
        "cdrom_allowed": vm.status in lifecycle.MEDIA_STATES and (vm.cdrom_drive or not running),
        "cdrom_busy": any(j.kind.startswith("vm.cdrom.") and j.is_active for j in vm_jobs(vm=vm)[:5]),
    }


@login_required
@require_http_methods(["GET", "POST"])
@portal_view
def cdrom_view(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the CD-ROM panel (live.js fetches it again when the media changes). POST: insert an ISO."""
    vm = vm_get(user=request.user, vm_id=pk)
    if request.method == "POST":
        result = services.vm_cdrom_insert(actor=request.user, via=Via.WEB, vm=vm, image=request.POST.get("image", ""))
        (messages.success if result.job else messages.info)(request, result.message)
        return redirect(reverse("vms:detail", args=[vm.pk]) + "#cdrom")
    response = render(request, "vms/_cdrom.html", {"vm": vm, **_cdrom_context(vm, user=request.user)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@portal_view
def cdrom_eject_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Eject the CD (confirmed in the page first); the job opens the tray."""
    result = services.vm_cdrom_eject(actor=request.user, via=Via.WEB, vm=pk)
    (messages.success if result.job else messages.info)(request, result.message)
    return redirect(reverse("vms:detail", args=[pk]) + "#cdrom")


# --- disks (issue #11): the Disks panel of the VM page and the "My disks" page -------------------
# Every rule is in vms.disks; these views parse the form, call one service and render.

def _disk_context(vm, *, user, form: DiskAddForm | None = None) -> dict:
    """What the Disks panel shows: the disks, what the Add disk form offers, and its errors."""
    rows = vm_disks(vm=vm)
    for disk in rows:
        disk.is_data = is_data_disk(disk.volume)
        disk.props = sorted((disk.properties or {}).items())
    try:
        attached_here = {d.volume_id for d in rows}
        attachable = [v for v in data_volumes(actor=user) if v.pk not in attached_here]
    except NotImplementedError:  # the disk services are not there yet: the panel still renders
        attachable = []
    states = getattr(disks, "DISK_STATES", services.NIC_STATES)
    return {
        "disks": rows,
        "disks_running": vm.status in VMStatus.ACTIVE,
        "disks_busy": any(d.status != VMDisk.Status.ATTACHED for d in rows),
        "disks_allowed": vm.status in states,
        "disk_buses": VMDisk.Bus.choices,
        "disk_pools": list(vm.host.pools.filter(content="data").order_by("name").values_list("name", flat=True))
        if vm.host_id else [],
        "disk_attachable": attachable,
        "disk_prop_fields": disk_property_fields(user=user),
        "disk_form": form or DiskAddForm(initial={"source": "new", "bus": VMDisk.Bus.VIRTIO}),
    }


def _disks_redirect(pk: int) -> HttpResponse:
    return redirect(reverse("vms:detail", args=[pk]) + "#disks")


@login_required
@require_http_methods(["GET", "POST"])
@portal_view
def disk_list_view(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the Disks panel (live.js fetches it again when the disks change). POST: add a new disk or
    attach an existing data disk; errors are shown next to the form's fields."""
    vm = vm_get(user=request.user, vm_id=pk)
    if request.method == "POST":
        form = DiskAddForm(request.POST)
        if form.is_valid():
            try:
                with size_field():
                    _disk, _job, message = disks.vm_disk_add(actor=request.user, via=Via.WEB, vm=vm,
                                                             **form.service_kwargs())
            except PortalError as exc:
                if is_web_404(exc):
                    raise
                form_error(form, exc, user=request.user)
            else:
                messages.success(request, message)
                return _disks_redirect(vm.pk)
        return _detail(request, vm_get(user=request.user, vm_id=pk), disk_form=form, status=400)
    response = render(request, "vms/_disks.html", {"vm": vm, **_disk_context(vm, user=request.user)})
    response["Cache-Control"] = "no-store"
    return response


def _truthy(value: object) -> bool:
    return str(value or "").strip().lower() in ("1", "on", "true", "yes")


@login_required
@require_POST
@portal_view
def disk_remove_view(request: HttpRequest, pk: int, disk_id: int) -> HttpResponse:
    """Detach a data disk, or detach and delete it (confirmed in the page first); a job does it."""
    _disk, _job, message = disks.vm_disk_remove(actor=request.user, via=Via.WEB, vm=pk, disk=disk_id,
                                                delete_volume=_truthy(request.POST.get("delete_volume")))
    messages.success(request, message)
    return _disks_redirect(pk)


@login_required
@require_POST
@portal_view
def disk_grow_view(request: HttpRequest, pk: int, disk_id: int) -> HttpResponse:
    """Grow one disk (confirmed in the page first); live while the VM runs."""
    _disk, job, message = disks.vm_disk_grow(actor=request.user, via=Via.WEB, vm=pk, disk=disk_id,
                                             size_gib=request.POST.get("size_gib", ""))
    (messages.success if job else messages.info)(request, message)
    return _disks_redirect(pk)


@login_required
@require_POST
@portal_view
def disk_properties_view(request: HttpRequest, pk: int, disk_id: int) -> HttpResponse:
    """Change a disk's device properties: the fields of the catalog that the user changed."""
    vm = vm_get(user=request.user, vm_id=pk)
    disk = vm_disk_get(vm=vm, key=disk_id)
    changed = posted_properties(request.POST, disk_property_fields(user=request.user), disk.properties)
    if not changed:
        messages.info(request, f"Nothing changed on {disk.target}.")
        return _disks_redirect(vm.pk)
    _disk, job, message = disks.vm_disk_update(actor=request.user, via=Via.WEB, vm=vm, disk=disk,
                                               properties=changed)
    (messages.success if job else messages.info)(request, message)
    return _disks_redirect(vm.pk)


@login_required
@require_GET
@portal_view
def volume_list_view(request: HttpRequest) -> HttpResponse:
    """My disks: the data disks you may use, the VMs they are attached to; detached ones can be deleted."""
    try:
        volumes = list(data_volumes(actor=request.user))
    except NotImplementedError:
        volumes = []
    for volume in volumes:
        volume.vm_attachments = [a for a in volume.attachments.all() if a.vm.deleted_at is None]
    return render(request, "vms/volumes.html", {"volumes": volumes, "usage": quota_usage(user=request.user)})


@login_required
@require_POST
@portal_view(fallback="vms:volumes")
def volume_delete_view(request: HttpRequest, volume_id: int) -> HttpResponse:
    """Delete a detached data disk (confirmed in the page first); a job removes it from its storage."""
    _volume, _job, message = disks.data_volume_delete(actor=request.user, via=Via.WEB, volume=volume_id)
    messages.success(request, message)
    return redirect("vms:volumes")


@require_GET
def status_json_view(request: HttpRequest) -> JsonResponse:
    """The live state as JSON: the fallback that live.js polls when the websocket cannot connect."""
    if not request.user.is_authenticated:
        return JsonResponse({"code": "not_authenticated", "detail": "Sign in to see your VMs."}, status=401)
    response = JsonResponse(live_state(user=request.user))
    response["Cache-Control"] = "no-store"
    return response

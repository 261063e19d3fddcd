"""Admin back-office for VMs and flavors, users and groups (with their quotas and VMs), and the dashboard.

A thin adapter: what libvirt or the services own is read-only here, and every change (save,
delete, actions) calls a service in vms.services with `via=Via.ADMIN`, reporting one
message per object.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join

from accounts.admin import SSHKeyInline, user_keys_summary
from cluster.admin import ForeignDomainAdmin
from cluster.models import ForeignDomain, Host
from portal.admin_helpers import (
    EMPTY,
    ReadOnlyAdminMixin,
    ServiceDeleteMixin,
    ServiceSaveMixin,
    admin_error_text,
    admin_url,
    badge,
    changelist_link,
    job_report,
    link,
    mib,
    note_context,
    per_object,
    progress_bar,
    target_link,
    when,
)
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed
from portal.models import AuditEvent, Job
from portal.web import form_error
from quotas.admin import GroupQuotaInline, QuotaInlineMixin, UserQuotaInline
from quotas.models import Quota
from storage.admin import VolumeAdmin
from storage.models import Image, Volume

from . import adoption, lifecycle, services
from .bulk import vm_bulk_create
from .choices import VMStatus
from .dashboard import dashboard
from .disk_doors import is_data_disk, properties_text
from .disks import data_volume_delete
from .lease_policy import lease_policy_delete, lease_policy_save
from .migration import vm_migrate
from .models import VM, Flavor, LeasePolicy, Snapshot, VMDisk, VMNic
from .scheduling import SCHEDULING_FIELDS, vm_scheduling_clean, vm_scheduling_update
from .selectors import vm_jobs, vm_ssh_command
from .validation import NAME_HELP, validate_description, validate_vm_name

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]
User = get_user_model()


def _portal_create_url() -> str:
    for name in ("vms:create", "vms:list"):
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return "/"


# --- flavors ------------------------------------------------------------------------------------

@admin.register(Flavor)
class FlavorAdmin(admin.ModelAdmin):
    list_display = ("name", "vcpus", "memory", "disk", "is_public", "vms_link", "description")
    list_filter = ("is_public",)
    search_fields = ("name", "description")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=~Q(vms__status=VMStatus.DELETED)))

    @admin.display(description="memory", ordering="memory_mib")
    def memory(self, obj):
        return mib(obj.memory_mib)

    @admin.display(description="disk", ordering="disk_gib")
    def disk(self, obj):
        return f"{obj.disk_gib} GiB"

    @admin.display(description="VMs", ordering="live_vms")
    def vms_link(self, obj):
        return changelist_link(VM, obj.live_vms, flavor__id__exact=obj.pk)


# --- VMs ----------------------------------------------------------------------------------------

class LifecycleFilter(admin.SimpleListFilter):
    """Live VMs by default; deleted ones are kept for history and shown on request."""

    title = "lifecycle"
    parameter_name = "lifecycle"

    def __init__(self, request, params, model, model_admin):
        # Filtering on a status explicitly (e.g. "deleted") must not be hidden by the "live" default.
        self._status_given = "status__exact" in params
        super().__init__(request, params, model, model_admin)

    def lookups(self, request, model_admin):
        return [("live", "Live"), ("deleted", "Deleted"), ("all", "All")]

    def _effective(self) -> str:
        return self.value() or ("all" if self._status_given else "live")

    def choices(self, changelist):
        current = self._effective()
        for lookup, title in self.lookup_choices:
            yield {"selected": current == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}

    def queryset(self, request, queryset):
        value = self._effective()
        if value == "live":
            return queryset.exclude(status=VMStatus.DELETED)
        if value == "deleted":
            return queryset.filter(status=VMStatus.DELETED)
        return queryset


class VMChangeForm(forms.ModelForm):
    """Only the name and description are edited here; the service checks them again and saves."""

    class Meta:
        model = VM
        fields = ["name", "description"]
        help_texts = {"name": NAME_HELP}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].strip = False  # "vm " is refused by the name rule, not trimmed into "vm"

    def _check(self, fn, field):
        try:
            return fn(self.cleaned_data.get(field))
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.errors.get(field) or exc.message) from None

    def clean_name(self):
        return self._check(validate_vm_name, "name")

    def clean_description(self):
        return self._check(validate_description, "description")


class VMSchedulingChangeForm(VMChangeForm):
    """The VM change page: name and description, plus the administrators' scheduling settings (HA, HA
    priority, pinned hosts, required tags), checked by vms.scheduling (errors next to their fields) and
    saved by vm_scheduling_update in VMAdmin.save_model, never by the form itself."""

    highly_available = forms.BooleanField(
        required=False, label="Highly available",
        help_text="Restarted on another host of its cluster when its host is confirmed down (fenced or declared "
                  "down). Needs its disks on shared storage.")
    ha_priority = forms.IntegerField(label="HA priority", help_text="0–100: higher restarts first.")
    pinned_hosts = forms.ModelMultipleChoiceField(
        queryset=Host.objects.select_related("cluster").order_by("cluster__name", "name"), required=False,
        label="Pinned hosts", help_text="Run only on these hosts of its cluster (none: any host). Applies at the "
                                        "next placement or migration; the VM is not moved now.")
    required_tags = forms.CharField(
        required=False, label="Required host tags",
        help_text="Comma-separated; only hosts with every one of these tags take the VM, e.g. ssd, gpu.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["required_tags"] = ", ".join(self.instance.required_tags or [])
            self.initial["pinned_hosts"] = [h.pk for h in self.instance.pinned_hosts.all()]
        self.fields["pinned_hosts"].label_from_instance = (
            lambda h: f"{h.name} ({h.cluster.name if h.cluster else 'no cluster'}"
                      f"{'' if h.enabled else ', disabled'})")

    def clean(self):
        cleaned = super().clean()
        changes = {name: cleaned[name] for name in SCHEDULING_FIELDS
                   if name in cleaned and name in self.changed_data}
        if "pinned_hosts" in changes:
            changes["pinned_hosts"] = list(changes["pinned_hosts"])
        if changes and self.instance.pk:
            try:
                cleaned.update(vm_scheduling_clean(vm=self.instance, changes=changes))
            except ValidationFailed as exc:
                for field, errs in exc.errors.items():
                    for err in errs:
                        self.add_error(field if field in self.fields else None, err)
        return cleaned

    def _save_m2m(self):
        """Pinned hosts are saved by vm_scheduling_update (validated, audited), never written from here."""


class VMAdminCreateForm(forms.Form):
    """Create a VM for a user: the fields only parse; vm_create checks everything (quota included)."""

    owner = forms.ModelChoiceField(queryset=None, help_text="The VM is theirs, on their quota (or their team's).")
    name = forms.CharField(required=False, strip=False, help_text=NAME_HELP)
    image = forms.ModelChoiceField(queryset=None, required=False, empty_label="The default image")
    flavor = forms.ModelChoiceField(queryset=None, required=False, empty_label="Custom size (below)")
    vcpus = forms.CharField(required=False, label="vCPUs")
    memory_mib = forms.CharField(required=False, label="Memory (MiB)")
    disk_gib = forms.CharField(required=False, label="Disk (GiB)")
    group = forms.ModelChoiceField(queryset=None, required=False, empty_label="None: a personal VM",
                                   label="Team", help_text="A team VM is shared with the team and uses its quota.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), strip=False)
    start = forms.BooleanField(required=False, initial=True, help_text="Start it once created.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")
        self.fields["image"].queryset = Image.objects.order_by("name")
        self.fields["flavor"].queryset = Flavor.objects.all()
        self.fields["group"].queryset = Group.objects.order_by("name")

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        sizes = {} if data["flavor"] else {"vcpus": data["vcpus"], "memory_mib": data["memory_mib"],
                                           "disk_gib": data["disk_gib"]}
        return {"owner": data["owner"], "name": data["name"], "image": data["image"], "flavor": data["flavor"],
                "group": data["group"], "description": data["description"], "start": data["start"], **sizes}


class VMAdminBulkCreateForm(VMAdminCreateForm):
    """Create several VMs for a user (issue #14): vms.bulk.vm_bulk_create checks everything."""

    name = None  # type: ignore[assignment]  # the names come from the pattern
    name_pattern = forms.CharField(strip=False, initial="lab-{n:02}",
                                   help_text="{n} is each VM's number: lab-{n:02} gives lab-01, lab-02, …")
    count = forms.CharField(initial="5", help_text="How many VMs.")
    start_number = forms.CharField(required=False, initial="1", help_text="The first number.")
    partial = forms.BooleanField(required=False, help_text="As many as fit the quota and the hosts (default: all "
                                                           "or nothing).")
    field_order = ["owner", "name_pattern", "count", "start_number"]

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        sizes = {} if data["flavor"] else {"vcpus": data["vcpus"], "memory_mib": data["memory_mib"],
                                           "disk_gib": data["disk_gib"]}
        return {"owner": data["owner"], "name_pattern": data["name_pattern"], "count": data["count"],
                "start_number": data["start_number"] or 1, "image": data["image"], "flavor": data["flavor"],
                "group": data["group"], "description": data["description"], "start": data["start"],
                "partial": data["partial"], **sizes}


class DiskInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The VM's disks: each attachment and its storage volume, as the services recorded them (read-only)."""

    model = VMDisk
    extra = 0
    can_delete = False
    fields = ("volume_link", "target", "bus", "readonly", "shareable", "status", "label", "format", "capacity",
              "properties_text", "backing_image", "path")
    readonly_fields = fields
    verbose_name = "disk"
    verbose_name_plural = "disks (storage volumes)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("volume__pool", "volume__backing_image")

    @admin.display(description="volume")
    def volume_link(self, obj):
        return link(obj.volume)

    @admin.display(description="format")
    def format(self, obj):
        return obj.volume.format

    @admin.display(description="shareable", boolean=True)
    def shareable(self, obj):
        return obj.volume.shareable

    @admin.display(description="label")
    def label(self, obj):
        return obj.volume.label or EMPTY

    @admin.display(description="properties")
    def properties_text(self, obj):
        return properties_text(obj.properties) if obj.properties else EMPTY

    @admin.display(description="capacity")
    def capacity(self, obj):
        return f"{obj.volume.capacity_gib} GiB"

    @admin.display(description="backing image")
    def backing_image(self, obj):
        return link(obj.volume.backing_image) if obj.volume.backing_image_id else EMPTY

    @admin.display(description="path")
    def path(self, obj):
        return obj.volume.path or EMPTY


class SnapshotInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The VM's snapshots (read-only here: users take, revert and delete them on the VM's page or the API)."""

    model = Snapshot
    extra = 0
    can_delete = False
    fields = ("name", "status", "has_memory", "vm_state", "created_by", "created_via", "taken_at", "reverted_at",
              "description")
    readonly_fields = fields


class NicInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The VM's NICs as the services recorded them, with the address last seen in the network's DHCP leases
    (read-only, as the disks: NICs are added, removed and tuned by their owners on the VM's page, the API
    or the CLI)."""

    model = VMNic
    extra = 0
    can_delete = False
    fields = ("network_link", "mac", "model", "properties_text", "status", "ip_address", "ip_seen")
    readonly_fields = fields
    verbose_name = "NIC"
    verbose_name_plural = "NICs (networks)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("network")

    @admin.display(description="network")
    def network_link(self, obj):
        return link(obj.network)

    @admin.display(description="properties")
    def properties_text(self, obj):
        return properties_text(obj.properties) if obj.properties else EMPTY

    @admin.display(description="address seen")
    def ip_seen(self, obj):
        return when(obj.ip_seen_at)


@admin.register(VM)
class VMAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = VMSchedulingChangeForm
    list_display = ("name", "owner_link", "group", "status_badge", "power_state", "host_link", "size",
                    "image", "addresses", "created_via", "created", "status_since", "expires_at")
    list_filter = (LifecycleFilter, "status", "host", ("owner", admin.RelatedOnlyFieldListFilter),
                   ("group", admin.RelatedOnlyFieldListFilter), "created_via",
                   ("image", admin.RelatedOnlyFieldListFilter), ("nics__network", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "owner__username", "uuid", "domain_name", "description")
    list_select_related = ("owner", "host", "image", "group")
    date_hierarchy = "created_at"
    actions = [*lifecycle.POWER_ACTIONS, "migrate_best_host", "release", "delete_selected"]
    inlines = [DiskInline, NicInline, SnapshotInline]
    change_list_template = "admin/vms/vm/change_list.html"
    readonly_fields = (
        "owner_link", "group", "quota_link", "uuid", "domain_name", "status_badge", "power_state", "last_error",
        "status_since", "observed", "created", "created_via", "deleted", "host_link", "domain_type", "flavor",
        "image", "vcpus", "memory", "disk", "ssh_line", "cdrom_media", "adopted", "recent_jobs", "recent_activity",
    )
    fieldsets = (
        (None, {"fields": ("name", "description", "owner_link", "group", "quota_link")}),
        ("State (from libvirt and the jobs)", {"fields": ("status_badge", "power_state", "last_error", "status_since",
                                                         "observed", "created", "created_via", "deleted")}),
        ("Placement and size", {"fields": ("host_link", "domain_name", "uuid", "domain_type", "flavor", "image",
                                           "vcpus", "memory", "disk", "ssh_line", "cdrom_media", "adopted")}),
        ("Scheduling and HA", {"fields": SCHEDULING_FIELDS,
                               "description": "Where the VM may run and whether it is restarted elsewhere when its "
                                              "host dies. Administrators only; audited as vm.scheduling."}),
        ("Recent jobs", {"fields": ("recent_jobs",)}),
        ("Recent activity", {"classes": ("collapse",), "fields": ("recent_activity",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("nics")

    def changelist_view(self, request, extra_context=None):
        extra = {"portal_create_url": _portal_create_url(), **(extra_context or {})}
        return super().changelist_view(request, extra)

    # VMs are created by vm_create (quota, placement, the create job), never as a raw row: the add
    # page is a form for that service (for any user), with its errors next to the fields.
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = VMAdminCreateForm(request.POST or None, initial={"start": True})
        if request.method == "POST" and form.is_valid():
            try:
                result = services.vm_create(actor=request.user, via=Via.ADMIN, **form.service_kwargs())
            except PortalError as exc:
                form_error(form, exc, user=request.user)
            else:
                level, text = job_report(result.job, result.message)
                self.message_user(request, text, level)
                return HttpResponseRedirect(admin_url(result.vm, "change"))
        context = {
            **self.admin_site.each_context(request), "title": "Create a VM for a user", "form": form,
            "opts": self.model._meta, "has_view_permission": True, "subtitle": None,
        }
        return TemplateResponse(request, "admin/vms/vm/add.html", context, status=400 if form.errors else 200)

    def get_urls(self):
        name = f"{self.model._meta.app_label}_{self.model._meta.model_name}_bulk_create"
        return [path("bulk-create/", self.admin_site.admin_view(self.bulk_create_view), name=name),
                *super().get_urls()]

    def bulk_create_view(self, request):
        """Create several VMs for a user with one parent job (vms.bulk), like the portal's "Create several"."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = VMAdminBulkCreateForm(request.POST or None, initial={"start": True})
        if request.method == "POST" and form.is_valid():
            try:
                result = vm_bulk_create(actor=request.user, via=Via.ADMIN, **form.service_kwargs())
            except PortalError as exc:
                form_error(form, exc, user=request.user)
            else:
                level, text = job_report(result.job, result.message)
                self.message_user(request, text, level)
                return HttpResponseRedirect(admin_url(result.job, "change") or "../")
        context = {
            **self.admin_site.each_context(request), "title": "Create several VMs for a user", "form": form,
            "opts": self.model._meta, "has_view_permission": True, "subtitle": None,
            "submit_label": "Create the VMs", "what": "No VM was created",
        }
        return TemplateResponse(request, "admin/vms/vm/add.html", context, status=400 if form.errors else 200)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status == VMStatus.DELETED:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status in (VMStatus.DELETED, VMStatus.DELETING):
            return False
        return super().has_delete_permission(request, obj)

    # columns
    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, obj):
        return link(obj.owner, obj.owner.get_username())

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display(), title=obj.last_error)

    @admin.display(description="host", ordering="host__name")
    def host_link(self, obj):
        return link(obj.host)

    @admin.display(description="CD-ROM")
    def cdrom_media(self, obj):
        """The drive and the ISO in it (changed by the owner's doors: web, API, CLI; boots CD first)."""
        if not obj.cdrom_drive:
            return "No drive"
        drive = f"Drive ({obj.cdrom_bus.upper()} {obj.cdrom_target})"
        if obj.adopted_at is not None:  # its own boot order; media not the portal's may be in it
            if obj.cdrom is None:
                return f"{drive}: no portal ISO in it (the domain's own media, if any, stays)"
            return format_html("{} with {} (the domain's own boot order)", drive, link(obj.cdrom))
        if obj.cdrom is None:
            return f"{drive}, empty tray: boots from its disk"
        return format_html("{} with {}: boots from CD first", drive, link(obj.cdrom))

    @admin.display(description="size")
    def size(self, obj):
        return format_html('<span title="vCPUs / memory / disk">{} / {} / {} GiB</span>', obj.vcpus,
                           mib(obj.memory_mib), obj.disk_gib)

    @admin.display(description="memory")
    def memory(self, obj):
        return mib(obj.memory_mib)

    @admin.display(description="disk")
    def disk(self, obj):
        return f"{obj.disk_gib} GiB"

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    @admin.display(description="addresses")
    def addresses(self, obj):
        seen = [nic.ip_address for nic in obj.nics.all() if nic.ip_address]
        return ", ".join(seen) if seen else EMPTY

    @admin.display(description="ssh")
    def ssh_line(self, obj):
        line = vm_ssh_command(vm=obj)
        return format_html("<code>{}</code>", line) if line else "No address seen yet (or the image has no SSH login)."

    @admin.display(description="state since", ordering="status_changed_at")
    def status_since(self, obj):
        return when(obj.status_changed_at)

    @admin.display(description="last observed in libvirt")
    def observed(self, obj):
        return when(obj.observed_at)

    @admin.display(description="deleted")
    def deleted(self, obj):
        return when(obj.deleted_at)

    @admin.display(description="adopted")
    def adopted(self, obj):
        return when(obj.adopted_at) if obj.adopted_at else "No: made by the portal."

    @admin.display(description="quota")
    def quota_link(self, obj):
        quota = Quota.objects.filter(group=obj.group).first() if obj.group_id else \
            Quota.objects.filter(user=obj.owner).first()
        if quota is None:
            return "defaults (no quota row yet)"
        return link(quota, f"{quota.subject_name}")

    @admin.display(description="jobs")
    def recent_jobs(self, obj):
        jobs = list(vm_jobs(vm=obj)[:10])
        if not jobs:
            return "No jobs yet."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((link(j, j.kind), badge(j.status, j.get_status_display()), progress_bar(j.progress, j.step),
              j.actor.get_username() if j.actor else "system", j.get_via_display(), when(j.created_at))
             for j in jobs))
        more = changelist_link(type(jobs[0]), "all jobs of this VM →", target_type="vm", target_id=obj.pk)
        return format_html('<table class="pinline"><thead><tr><th>job</th><th>status</th><th>progress</th>'
                           '<th>actor</th><th>via</th><th>created</th></tr></thead><tbody>{}</tbody></table>'
                           '<p>{}</p>', rows, more)

    @admin.display(description="audit")
    def recent_activity(self, obj):
        events = list(AuditEvent.objects.filter(target_type="vm", target_id=str(obj.pk))[:15])
        if not events:
            return "Nothing recorded."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((when(e.at), e.actor_name or "system", e.get_via_display(), e.action,
              badge(e.outcome, e.get_outcome_display()), e.message) for e in events))
        more = changelist_link(AuditEvent, "full audit trail →", target_type="vm", target_id=obj.pk)
        return format_html('<table class="pinline"><thead><tr><th>at</th><th>actor</th><th>via</th>'
                           '<th>action</th><th>outcome</th><th>message</th></tr></thead><tbody>{}</tbody>'
                           '</table><p>{}</p>', rows, more)

    # saving: name and description through vm_update, the scheduling settings through vm_scheduling_update
    def save_model(self, request, obj, form, change):
        if not change:  # pragma: no cover - add is disabled
            raise PermissionError("VMs are created through vms.services.vm_create")
        if not form.changed_data:
            return
        if {"name", "description"} & set(form.changed_data):
            vm = self.call_service(request, lambda: services.vm_update(
                actor=request.user, via=Via.ADMIN, vm=obj.pk,
                name=form.cleaned_data["name"], description=form.cleaned_data["description"]))
            if vm is None:
                return
        scheduling = {name: form.cleaned_data[name] for name in SCHEDULING_FIELDS if name in form.changed_data}
        if scheduling:
            result = self.call_service(request, lambda: vm_scheduling_update(
                actor=request.user, via=Via.ADMIN, vm=obj.pk, **scheduling))
            for warning in result.warnings if result is not None else ():
                self.message_user(request, warning, messages.WARNING)
        obj.refresh_from_db()

    # deleting: through vm_delete (power off, undefine, remove every disk), never a row delete
    def get_deleted_objects(self, objs, request):
        # The delete job removes the disks, not the operator: no delete permission needed on volumes.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def _delete_one(self, request, vm) -> tuple[int, str]:
        result = services.vm_delete(actor=request.user, via=Via.ADMIN, vm=vm.pk)
        return job_report(result.job, result.message)

    def delete_model(self, request, obj):
        per_object(self, request, [obj], lambda vm: self._delete_one(request, vm), verb="Deleting")

    def delete_queryset(self, request, queryset):
        per_object(self, request, queryset, lambda vm: self._delete_one(request, vm), verb="Deleting")

    def log_deletions(self, request, queryset):
        return None  # vm_delete writes the audit event; the row itself stays (status deleted)

    def response_delete(self, request, obj_display, obj_id):
        # The per-object message was already given; go back to the list without Django's "deleted" note.
        return HttpResponseRedirect(admin_url(VM, "changelist"))

    @admin.action(permissions=["delete"], description="Delete selected VMs (domain and disks)")
    def delete_selected(self, request, queryset):
        gone = [vm for vm in queryset if vm.status in (VMStatus.DELETED, VMStatus.DELETING)]
        for vm in gone:
            self.message_user(request, f"{vm.name}: already {vm.get_status_display().lower()}.", messages.INFO)
        queryset = queryset.exclude(pk__in=[vm.pk for vm in gone])
        if not queryset.exists():
            return None
        if request.POST.get("post"):
            self.delete_queryset(request, queryset)
            return None
        return django_delete_selected(self, request, queryset)  # the confirmation page

    @admin.action(permissions=["change"], description="Release: the portal forgets the VM, its domain and "
                                                       "disks stay on the host as they are",
                  description_plural="Release selected VMs (the domains and disks stay on the host)", location=BOTH)
    def release(self, request, queryset):
        def call(vm):
            name = vm.name
            adoption.vm_release(actor=request.user, via=Via.ADMIN, vm=vm.pk, reason="released from the admin")
            return messages.SUCCESS, (f"Released {name}: the portal forgot it; domain {vm.domain_name} and its "
                                      "disks stay on the host, listed as a foreign domain.")

        per_object(self, request, queryset, call, verb="Released")
        if queryset.model.objects.filter(pk__in=[vm.pk for vm in queryset]).count() == 0:
            return HttpResponseRedirect(admin_url(VM, "changelist"))
        return None

    @admin.action(permissions=["change"], description="Migrate to the best host (live; the cluster's scheduler "
                                                       "picks the host)",
                  description_plural="Migrate selected VMs to the best host (live)", location=BOTH)
    def migrate_best_host(self, request, queryset):
        def call(vm):
            result = vm_migrate(actor=request.user, via=Via.ADMIN, vm=vm.pk, reason="admin action: best host")
            return job_report(result.job, result.message)

        per_object(self, request, queryset, call, verb="Migrating")

    # power actions: one admin action per row of the lifecycle table (see below the class)
    def _power(self, request, queryset, action: str) -> None:
        transition = lifecycle.POWER_ACTIONS[action]

        def call(vm):
            result = services.vm_action(actor=request.user, via=Via.ADMIN, vm=vm.pk, action=action)
            return job_report(result.job, result.message)

        per_object(self, request, queryset, call, verb=transition.doing)


def _power_admin_action(action: str):
    """An admin action that runs `action` on each selected VM through the service."""
    transition = lifecycle.POWER_ACTIONS[action]

    def run(modeladmin: VMAdmin, request, queryset) -> None:
        modeladmin._power(request, queryset, action)

    run.__name__ = action
    return admin.action(permissions=["change"], description=f"{transition.label}: {transition.help}",
                        description_plural=f"{transition.label} selected VMs", location=BOTH)(run)


for _action in lifecycle.POWER_ACTIONS:
    setattr(VMAdmin, _action, _power_admin_action(_action))


# --- foreign domains: adopting one (cluster lists them; adopting is a vms rule) ------------------

class AdoptForm(forms.Form):
    """Whose the adopted VM becomes; the fields only parse, vm_adopt checks everything."""

    owner = forms.ModelChoiceField(queryset=None, help_text="The VM becomes theirs, on their quota (or their team's).")
    group = forms.ModelChoiceField(queryset=None, required=False, empty_label="None: a personal VM", label="Team")
    name = forms.CharField(required=False, strip=False, help_text=f"Blank: from the domain. {NAME_HELP}")
    override_reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Quota override reason",
        help_text="Given: the VM is adopted even beyond the quota, and the reason goes into the audit log.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")
        self.fields["group"].queryset = Group.objects.order_by("name")


ADOPT_NOTE = ("Domains found on the hosts that this portal did not create: never touched until an "
              "administrator adopts one (select it, then “Adopt”): the portal then reads its sizes, disks and "
              "NICs from libvirt, charges the owner's quota and writes its metadata into the running domain "
              "without restarting it. The list is refreshed by each reconcile.")

admin.site.unregister(ForeignDomain)


@admin.register(ForeignDomain)
class AdoptableForeignDomainAdmin(ForeignDomainAdmin):
    """The foreign-domain list of cluster.admin, with the Adopt action and page (vm_adopt)."""

    actions = ["adopt"]
    readonly_fields = ("host", "uuid", "name", "state", "owner_hint", "first_seen_at", "last_seen_at", "adopt_link")

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_adopt"
        return [path("<path:object_id>/adopt/", self.admin_site.admin_view(self.adopt_view), name=name),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        return admin.ModelAdmin.changelist_view(self, request, note_context(ADOPT_NOTE, extra_context))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return admin.ModelAdmin.changeform_view(self, request, object_id, form_url,
                                                note_context(ADOPT_NOTE, extra_context))

    @admin.display(description="adopt")
    def adopt_link(self, obj):
        url = admin_url(obj, "adopt")
        return format_html('<a class="button" href="{}">Adopt…</a>', url) if url else EMPTY

    @admin.action(description="Adopt the selected domain (choose its owner)")
    def adopt(self, request, queryset):
        chosen = list(queryset[:2])
        if len(chosen) != 1:
            self.message_user(request, "Select exactly one domain to adopt.", messages.WARNING)
            return None
        return HttpResponseRedirect(admin_url(chosen[0], "adopt"))

    def adopt_view(self, request, object_id):
        if not request.user.is_staff:
            raise PermissionDenied
        fd = self.get_object(request, object_id)
        if fd is None:
            self.message_user(request, "That foreign domain is no longer listed (adopted, or gone).", messages.WARNING)
            return HttpResponseRedirect(admin_url(ForeignDomain, "changelist"))
        form = AdoptForm(request.POST or None)
        plan = error = None
        try:
            plan = adoption.adoption_plan(actor=request.user, host=fd.host, uuid=fd.uuid)
        except PortalError as exc:
            error = admin_error_text(exc)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                vm = adoption.vm_adopt(actor=request.user, via=Via.ADMIN, host=fd.host, uuid=fd.uuid,
                                       owner=data["owner"], group=data["group"], name=data["name"] or None,
                                       override_reason=data["override_reason"])
            except PortalError as exc:
                form_error(form, exc, user=request.user)
            else:
                self.message_user(request, f"Adopted {fd.name} as {vm.name} for {vm.owner.get_username()}, "
                                           "without restarting it.", messages.SUCCESS)
                return HttpResponseRedirect(admin_url(vm, "change"))
        context = {
            **self.admin_site.each_context(request), "title": f"Adopt {fd.name}", "subtitle": None,
            "opts": self.opts, "form": form, "fd": fd, "plan": plan, "error": error,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/cluster/foreigndomain/adopt.html", context,
                                status=400 if form.errors else 200)


# --- data disks (issue #11): deleting a detached one goes through vms.disks.data_volume_delete ---

admin.site.unregister(Volume)


@admin.register(Volume)
class DataVolumeAdmin(ServiceDeleteMixin, VolumeAdmin):
    """storage.admin's volume list (owner, label, shareable, attachments), and deleting detached data disks
    through the service (a job removes the volume; the service refuses attached or boot disks)."""

    actions = ["delete_selected"]

    def has_delete_permission(self, request, obj=None):
        return request.user.is_staff and (obj is None or is_data_disk(obj))

    def get_deleted_objects(self, objs, request):
        # The job removes the volume, not the operator: no permission needed on the attachment rows.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def _in_use(self, obj) -> str | None:
        if not is_data_disk(obj):
            return f"{obj.name} is a VM's own disk (boot disk or seed): it is deleted with its VM."
        users = sorted({a.vm.name for a in obj.attachments.all() if a.vm.deleted_at is None})
        if users:
            return f"Cannot delete {obj.label or obj.name}: attached to {', '.join(users)}. Detach it first."
        return None

    def _delete(self, request, obj):
        _volume, job, message = data_volume_delete(actor=request.user, via=Via.ADMIN, volume=obj.pk)
        return job_report(job, message)


# --- users and groups: their quota inline (quotas) and their VMs ---------------------------------

admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(QuotaInlineMixin, DjangoUserAdmin):
    quota_subject = "user"
    inlines = [*DjangoUserAdmin.inlines, UserQuotaInline, SSHKeyInline]
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "is_active", "vms_link",
                    "last_login")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=~Q(vms__status=VMStatus.DELETED)))

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "vms_link", "ssh_keys") if obj is not None else fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (*fieldsets, ("VMs", {"fields": ("vms_link",)}), ("SSH keys", {"fields": ("ssh_keys",)}))

    @admin.display(description="SSH keys")
    def ssh_keys(self, obj):
        return user_keys_summary(obj)

    @admin.display(description="VMs", ordering="live_vms")
    def vms_link(self, obj):
        count = getattr(obj, "live_vms", None)
        if count is None:
            count = VM.objects.filter(owner=obj).exclude(status="deleted").count()
        return changelist_link(VM, f"{count} VM{'s' if count != 1 else ''}", owner__id__exact=obj.pk)


@admin.register(Group)
class GroupAdmin(QuotaInlineMixin, DjangoGroupAdmin):
    quota_subject = "group"
    inlines = [*DjangoGroupAdmin.inlines, GroupQuotaInline]
    list_display = ("name", "members", "vms_link")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            n_members=Count("user", distinct=True),
            live_vms=Count("vms", filter=~Q(vms__status=VMStatus.DELETED), distinct=True))

    @admin.display(description="members", ordering="n_members")
    def members(self, obj):
        return changelist_link(User, obj.n_members, groups__id__exact=obj.pk)

    @admin.display(description="team VMs", ordering="live_vms")
    def vms_link(self, obj):
        return changelist_link(VM, obj.live_vms, group__id__exact=obj.pk)


# --- the dashboard ------------------------------------------------------------------------------

def dashboard_view(request):
    """Operators' overview (staff only, wrapped by admin.site.admin_view in portal/urls.py)."""
    data = dashboard(hours=24)
    hosts = [{
        "host": c.host, "url": admin_url(c.host), "badge": badge(c.host.status, c.host.get_status_display(),
                                                                 title=c.host.last_error),
        "vms": c.vms, "vms_url": admin_url(VM, "changelist", host__id__exact=c.host.pk),
        "vcpus": c.vcpus, "vcpu_percent": c.vcpu_percent, "memory": mib(c.memory_mib),
        "host_memory": mib(c.host.memory_mib), "memory_percent": c.memory_percent,
        "free_memory": mib(c.host.free_memory_mib), "foreign": c.foreign,
        "foreign_url": admin_url(ForeignDomain, "changelist", host__id__exact=c.host.pk),
        "last_seen": when(c.host.last_seen_at),
    } for c in data.hosts]
    error_vms = [{
        "link": link(vm), "owner": link(vm.owner, vm.owner.get_username()), "host": link(vm.host),
        "since": when(vm.status_changed_at), "reason": vm.last_error or EMPTY,
    } for vm in data.error_vms]
    failed_jobs = [{
        "link": link(j, j.kind), "target": target_link(j.target_type, j.target_id, j.target_name),
        "badge": badge(j.status, j.get_status_display()), "error": j.error or EMPTY, "when": when(j.created_at),
    } for j in data.recent_failed_jobs]
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "subtitle": None,
        "d": data,
        "hosts": hosts,
        "error_vms": error_vms,
        "failed_jobs": failed_jobs,
        "totals_memory": mib(data.totals["memory_mib"]),
        "totals_host_memory": mib(data.totals["host_memory_mib"]),
        "status_counts": [(VMStatus(s).label, s, n) for s, n in sorted(data.vm_status_counts.items())],
        "vm_changelist": admin_url(VM, "changelist"),
        "error_vms_url": admin_url(VM, "changelist", status__exact=VMStatus.ERROR),
        "foreign_url": admin_url(ForeignDomain, "changelist"),
        "host_changelist": admin_url(Host, "changelist"),
        "failed_jobs_url": _jobs_url(status__in="failed,errored"),
        "active_jobs_url": _jobs_url(status__in="pending,running"),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _jobs_url(**query) -> str | None:
    return admin_url(Job, "changelist", **query)



# --- affinity groups (scheduler: together or apart; enforcing = a filter, else a weight) ---------

from portal.audit import audit  # noqa: E402  (self-contained block)
from vms.models import AffinityGroup  # noqa: E402


@admin.register(AffinityGroup)
class AffinityGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "enforcing", "members")
    list_filter = ("positive", "enforcing")
    search_fields = ("name", "vms__name")
    filter_horizontal = ("vms",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_vms=Count("vms"))

    @admin.display(description="rule", ordering="positive")
    def kind(self, obj):
        return "together" if obj.positive else "apart"

    @admin.display(description="VMs", ordering="n_vms")
    def members(self, obj):
        return obj.n_vms

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "vms":
            kwargs["queryset"] = VM.objects.exclude(status=VMStatus.DELETED).order_by("name")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        group = form.instance
        names = sorted(group.vms.values_list("name", flat=True))
        audit(actor=request.user, via=Via.ADMIN, action="affinity_group.change" if change else "affinity_group.create",
              target=group, message=f"{'Change' if change else 'Create'} affinity group {group.name} "
                                    f"({'together' if group.positive else 'apart'}, "
                                    f"{'enforcing' if group.enforcing else 'preferred'}): {', '.join(names) or 'no VMs'}",
              data={"vms": names, "positive": group.positive, "enforcing": group.enforcing})

    def delete_model(self, request, obj):
        audit(actor=request.user, via=Via.ADMIN, action="affinity_group.delete", target=obj,
              message=f"Delete affinity group {obj.name}")
        super().delete_model(request, obj)


# --- device property rules (issue #11) -------------------------------------------------------------

from portal.exceptions import ValidationFailed as _PropertyInvalid  # noqa: E402  (self-contained block)
from vms import properties as device_properties  # noqa: E402
from vms.models import DevicePropertyRule  # noqa: E402


def _property_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    return [(device.upper() if device == "nic" else device.capitalize(),
             [(p.name, f"{p.name} — {p.label}") for p in device_properties.property_catalog(device)])
            for device in (device_properties.DISK, device_properties.NIC)]


def _catalog_help() -> str:
    lines = []
    for device in (device_properties.DISK, device_properties.NIC):
        for p in device_properties.property_catalog(device):
            values = ", ".join(p.choices) if p.kind == "choice" else (
                f"{p.minimum}–{p.maximum}" if p.kind == "int" else "text")
            lines.append(f"{device} {p.name}: {values}")
    return "Comma-separated values users may choose (empty: every valid value). " + "; ".join(lines)


class DevicePropertyRuleForm(forms.ModelForm):
    """A rule names a property of the catalog (vms.properties); its allowed values must be valid ones."""

    name = forms.ChoiceField(choices=_property_choices, help_text="A property of the catalog for the device kind.")
    allowed_values = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 60}),
                                     help_text=_catalog_help)

    class Meta:
        model = DevicePropertyRule
        fields = ("device", "name", "users_may_set", "allowed_values")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_values"] = ", ".join(str(v) for v in self.instance.allowed_values or [])

    def clean(self):
        data = super().clean()
        device, name = data.get("device"), data.get("name")
        if not device or not name:
            return data
        info = device_properties.property_info(device, name)
        if info is None:
            self.add_error("name", f"A {device} has no property {name}.")
            return data
        values = []
        for raw in (v.strip() for v in (data.get("allowed_values") or "").split(",")):
            if not raw:
                continue
            try:
                values.append(device_properties.normalise_value(info, raw))
            except _PropertyInvalid as exc:
                self.add_error("allowed_values", exc.message)
                return data
        data["allowed_values"] = list(dict.fromkeys(values))
        return data


@admin.register(DevicePropertyRule)
class DevicePropertyRuleAdmin(admin.ModelAdmin):
    """Which device properties users may set, and to which values; without a rule, administrators only."""

    form = DevicePropertyRuleForm
    list_display = ("device", "name", "label", "users_may_set", "allowed")
    list_filter = ("device", "users_may_set")
    list_editable = ("users_may_set",)

    @admin.display(description="property")
    def label(self, obj):
        info = device_properties.property_info(obj.device, obj.name)
        return info.label if info else "(not in the catalog)"

    @admin.display(description="allowed values")
    def allowed(self, obj):
        return ", ".join(str(v) for v in obj.allowed_values or []) or "any valid value"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        audit(actor=request.user, via=Via.ADMIN, action="device_property_rule.change" if change else
              "device_property_rule.create", target_type="device_property_rule", target_id=str(obj.pk),
              target_name=str(obj), message=f"{obj.device} {obj.name}: users "
                                            f"{'may' if obj.users_may_set else 'may not'} set it"
                                            f"{' (' + ', '.join(map(str, obj.allowed_values)) + ')' if obj.allowed_values else ''}",
              data={"users_may_set": obj.users_may_set, "allowed_values": obj.allowed_values})

    def delete_model(self, request, obj):
        audit(actor=request.user, via=Via.ADMIN, action="device_property_rule.delete",
              target_type="device_property_rule", target_id=str(obj.pk), target_name=str(obj),
              message=f"Delete the rule for {obj.device} {obj.name}: administrators only")
        super().delete_model(request, obj)


@admin.register(LeasePolicy)
class LeasePolicyAdmin(admin.ModelAdmin):
    """A group's VM lease rules (vms.lease_policy); blank fields follow the site's PORTAL_LEASE_* settings."""

    list_display = ("group", "default_days", "max_days", "max_extension_days", "max_total_days", "grace_days",
                    "delete_expired")
    search_fields = ("group__name",)

    def save_model(self, request, obj, form, change):
        lease_policy_save(actor=request.user, via=Via.ADMIN, policy=obj)

    def delete_model(self, request, obj):
        lease_policy_delete(actor=request.user, via=Via.ADMIN, policy=obj)

    def delete_queryset(self, request, queryset):
        for policy in queryset:
            lease_policy_delete(actor=request.user, via=Via.ADMIN, policy=policy)

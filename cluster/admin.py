"""Admin back-office for hosts and the domains found on them that the portal did not create.

A thin adapter: what libvirt owns is read-only here; registering, enabling and reconciling a host
call cluster.services with `via=Via.ADMIN`. VMs and pools are reached through the reverse relations
(cluster sits below vms and storage and imports neither).
"""

from __future__ import annotations

import threading

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse

from portal.admin_helpers import (
    EMPTY,
    ServiceSaveMixin,
    admin_url,
    badge,
    changelist_link,
    job_report,
    link,
    live_vms_link,
    mib,
    note_context,
    per_object,
    when,
)
from portal.choices import Via
from portal.exceptions import ValidationFailed

from . import hostconfig, maintenance, power, services
from .choices import HostStatus
from .ha_outlook import ha_outlook
from .models import Cluster, ForeignDomain, Host
from .placement import HostLoad, host_loads

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]


# --- hosts --------------------------------------------------------------------------------------

# Colours of the host states that portal.admin_helpers has no word for.
STATUS_TONES = {HostStatus.PREPARING_FOR_MAINTENANCE: "busy", HostStatus.NON_RESPONSIVE: "bad",
                HostStatus.STANDBY: "info"}
_request_loads = threading.local()  # committed load per host, computed once per admin request


def _loads() -> dict[int, HostLoad]:
    loads = getattr(_request_loads, "value", None)
    if loads is None:
        loads = _request_loads.value = host_loads()
    return loads


class HostSettingsForm(forms.ModelForm):
    """The administrator's settings of a host; checked by cluster.hostconfig (the service's own rules)."""

    tags = forms.CharField(required=False, help_text="Comma-separated labels VMs can require, e.g. ssd, gpu.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "tags" in self.fields and self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags or [])

    def _host_for_checks(self) -> Host:
        return self.instance if self.instance.pk else Host(name=self.cleaned_data.get("name") or "the host",
                                                           uri=self.cleaned_data.get("uri") or "")

    def clean(self):
        cleaned = super().clean()
        changes = {name: cleaned[name] for name in hostconfig.CONFIG_FIELDS
                   if name in cleaned and name != "cluster"}
        if not changes or "uri" in self.errors:
            return cleaned
        try:
            cleaned.update(hostconfig.host_settings_clean(host=self._host_for_checks(), changes=changes))
        except ValidationFailed as exc:
            for field, errs in exc.errors.items():
                for err in errs:
                    self.add_error(field if field in self.fields else None, err)
        return cleaned


class HostAddForm(HostSettingsForm):
    class Meta:
        model = Host
        fields = ["name", "uri", "domain_type", "enabled", "cluster", "tags", "display_address", "migration_uri"]
        labels = {"cluster": "Cluster (blank: Default)"}
        help_texts = {"uri": hostconfig.URI_HELP + " For qemu+ssh, the portal's user needs SSH keys for the "
                                                   "host (ssh-copy-id) and its key in known_hosts."}

    def clean_uri(self):
        try:
            return hostconfig.host_uri_check(self.cleaned_data.get("uri", ""))
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None


class HostChangeForm(HostSettingsForm):
    class Meta:
        model = Host
        fields = ["name", "enabled", "domain_type", *hostconfig.CONFIG_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "cluster" in self.fields:
            self.fields["cluster"].required = True  # a registered host always belongs to a cluster


@admin.register(Host)
class HostAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = HostChangeForm
    list_display = ("name", "uri", "cluster", "status_badge", "enabled", "committed_memory", "running_vms", "cpus",
                    "memory", "vms_link", "effective_type", "last_seen")
    list_filter = ("cluster", "status", "enabled", "domain_type")
    list_select_related = ("cluster",)
    search_fields = ("name", "uri", "hostname")
    actions = ["refresh_facts", "reconcile_now", "delete_selected"]
    readonly_fields = ("status_badge", "status_since", "effective_type", "kvm_probe", "hostname", "libvirt_version",
                       "cpus", "memory", "memory_in_use", "committed_memory", "free_memory", "running_vms",
                       "cpu_usage", "failures", "last_seen", "last_error", "confirmed_down", "vms_link",
                       "foreign_link", "pools_link")
    fieldsets = (
        (None, {"fields": ("name", "uri", "enabled", "domain_type", "cluster", "tags")}),
        ("Network", {"fields": ("display_address", "migration_uri"),
                     "description": "The display address is where this host's VNC displays listen and where the "
                                    "console relay dials: required for a screen console on a host that is not "
                                    "this machine (never a loopback address). A change applies to VMs as they "
                                    "are next started."}),
        ("Capacity and load", {"fields": ("cpus", "memory", "memory_in_use", "committed_memory", "free_memory",
                                          "running_vms", "cpu_usage", "max_jobs")}),
        ("State", {"fields": ("status_badge", "status_since", "failures", "last_error", "confirmed_down",
                              "last_seen", "effective_type", "kvm_probe", "hostname", "libvirt_version")}),
        ("Power management", {"classes": ("collapse",), "fields": hostconfig.POWER_FIELDS,
                              "description": "Commands the power agent runs (no shell: an absolute executable "
                                             "path, then arguments with shell-like quoting), e.g. "
                                             "/usr/bin/ipmitool -I lanplus -H bmc2 -U admin -f /etc/vmportal/ipmi "
                                             "chassis power on."}),
        ("On this host", {"fields": ("vms_link", "foreign_link", "pools_link")}),
    )

    def get_queryset(self, request):
        # VMs are counted through the reverse relation (cluster does not import vms); a deleted VM has deleted_at.
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=Q(vms__deleted_at__isnull=True)))

    def changelist_view(self, request, extra_context=None):
        _request_loads.value = None
        return super().changelist_view(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        _request_loads.value = None
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("uri", *self.readonly_fields)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("name", "uri", "domain_type", "enabled", "cluster", "tags",
                                       "display_address", "migration_uri"),
                            "description": "The host is registered through the host service: its facts are "
                                           "read from libvirt and the portal's storage pool is created."}),)
        return self.fieldsets

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = HostAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    # columns
    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display(), tone=STATUS_TONES.get(obj.status), title=obj.last_error)

    @admin.display(description="status since")
    def status_since(self, obj):
        return when(obj.status_changed_at)

    @admin.display(description="confirmed down")
    def confirmed_down(self, obj):
        return when(obj.confirmed_down_at)

    @admin.display(description="committed memory")
    def committed_memory(self, obj):
        """Memory of the VMs placed here (placement's loads) against the host's memory."""
        committed = _loads().get(obj.pk, HostLoad()).memory_mib
        if not obj.memory_mib:
            return mib(committed) if committed else EMPTY
        percent = 100 * committed / obj.memory_mib
        tone = "bad" if percent > 100 else "warn" if percent >= 85 else "ok"
        return badge("", f"{percent:.0f}%", tone=tone, title=f"{mib(committed)} of {mib(obj.memory_mib)}")

    @admin.display(description="memory in use")
    def memory_in_use(self, obj):
        if not obj.memory_mib:
            return EMPTY
        used = max(0, obj.memory_mib - obj.free_memory_mib)
        return f"{mib(used)} of {mib(obj.memory_mib)} ({100 * used / obj.memory_mib:.0f}%)"

    @admin.display(description="running VMs", ordering="running_domains")
    def running_vms(self, obj):
        return obj.running_domains

    @admin.display(description="CPU usage", ordering="cpu_usage_percent")
    def cpu_usage(self, obj):
        return EMPTY if obj.cpu_usage_percent is None else f"{obj.cpu_usage_percent:.0f}%"

    @admin.display(description="domain type")
    def effective_type(self, obj):
        return obj.effective_domain_type if obj.domain_type != "auto" else f"{obj.effective_domain_type} (auto)"

    @admin.display(description="KVM probe", ordering="kvm_boots_guests")
    def kvm_probe(self, obj):
        if obj.kvm_boots_guests is None:
            return badge("unknown", "not probed")
        if obj.kvm_boots_guests:
            return badge("ok", "boots guests", tone="ok", title=str(obj.kvm_probed_at or ""))
        return badge("no", "no KVM guests", tone="warn", title=str(obj.kvm_probed_at or ""))

    @admin.display(description="memory", ordering="memory_mib")
    def memory(self, obj):
        return mib(obj.memory_mib)

    @admin.display(description="free memory")
    def free_memory(self, obj):
        return mib(obj.free_memory_mib)

    @admin.display(description="VMs", ordering="live_vms")
    def vms_link(self, obj):
        return live_vms_link(obj, host__id__exact=obj.pk)

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, obj):
        return when(obj.last_seen_at)

    @admin.display(description="foreign domains")
    def foreign_link(self, obj):
        return changelist_link(ForeignDomain, f"{obj.foreign_domains.count()} foreign domain(s)",
                               host__id__exact=obj.pk)

    @admin.display(description="storage pools")
    def pools_link(self, obj):
        return changelist_link(obj.pools.model, f"{obj.pools.count()} pool(s)", host__id__exact=obj.pk)

    # saving goes through the host services (cluster.services, cluster.hostconfig)
    def save_model(self, request, obj, form, change):
        settings_changed = {name: form.cleaned_data[name] for name in hostconfig.CONFIG_FIELDS
                            if name in form.changed_data}
        if not change:
            host = self.call_service(request, lambda: self._register(request, obj, settings_changed))
            if host is None:
                return
            obj.pk = host.pk
            obj.refresh_from_db()
            self._report_host(request, obj, "Registered")
            return
        changed = set(form.changed_data)
        if changed & {"name", "domain_type"}:
            host = self.call_service(request, lambda: services.host_register(
                actor=request.user, via=Via.ADMIN, name=obj.name, uri=obj.uri, domain_type=obj.domain_type))
            if host is None:
                return
        if "enabled" in changed:
            self.call_service(request, lambda: services.host_set_enabled(
                actor=request.user, via=Via.ADMIN, host=obj, enabled=obj.enabled))
        if settings_changed:
            self.call_service(request, lambda: hostconfig.host_configure(
                actor=request.user, via=Via.ADMIN, host=obj, **settings_changed))

    def _register(self, request, obj, settings_changed):
        host = services.host_register(actor=request.user, via=Via.ADMIN, name=obj.name, uri=obj.uri,
                                      domain_type=obj.domain_type)
        if not obj.enabled:
            services.host_set_enabled(actor=request.user, via=Via.ADMIN, host=host, enabled=False)
        if settings_changed:
            host = hostconfig.host_configure(actor=request.user, via=Via.ADMIN, host=host, **settings_changed)
        return host

    def _report_host(self, request, host, verb):
        if host.status == HostStatus.DOWN:
            self.message_user(request, f"{verb} {host.name}, but it is unreachable: {host.last_error}",
                              messages.WARNING)
        else:
            self.message_user(request, f"{verb} {host.name}: {host.get_status_display().lower()}, "
                                       f"{host.cpus} CPUs, {mib(host.memory_mib)}.", messages.SUCCESS)

    # deleting a host with VMs is refused
    def _vm_refusal(self, host) -> str | None:
        return services.host_delete_refusal(host=host)

    def delete_model(self, request, obj):
        self.call_service(request, lambda: services.host_delete(actor=request.user, via=Via.ADMIN, host=obj))

    def delete_queryset(self, request, queryset):
        per_object(self, request, queryset, lambda host: self._delete_one(request, host), verb="Deleted")

    def _delete_one(self, request, host):
        name = host.name
        services.host_delete(actor=request.user, via=Via.ADMIN, host=host)
        return messages.SUCCESS, f"Deleted host {name}."

    def log_deletions(self, request, queryset):
        return None  # host_delete writes the audit event

    def delete_view(self, request, object_id, extra_context=None):
        host = self.get_object(request, object_id)
        if host is not None:
            reason = self._vm_refusal(host)
            if reason:
                self.message_user(request, reason, messages.ERROR)
                return HttpResponseRedirect(admin_url(host))
        return super().delete_view(request, object_id, extra_context)

    @admin.action(permissions=["delete"], description="Delete selected hosts")
    def delete_selected(self, request, queryset):
        refused = []
        for host in queryset:
            reason = self._vm_refusal(host)
            if reason:
                refused.append(host.pk)
                self.message_user(request, reason, messages.ERROR)
        rest = queryset.exclude(pk__in=refused)
        if rest.exists():
            return django_delete_selected(self, request, rest)
        return None

    # actions
    @admin.action(description="Refresh facts from libvirt", location=BOTH)
    def refresh_facts(self, request, queryset):
        def call(host):
            host = services.host_refresh(host=host)
            if host.status == HostStatus.DOWN:
                return messages.ERROR, f"{host.name}: unreachable: {host.last_error}"
            return messages.SUCCESS, (f"{host.name}: {host.get_status_display().lower()}, {host.cpus} CPUs, "
                                      f"{mib(host.memory_mib)} ({mib(host.free_memory_mib)} free), "
                                      f"libvirt {host.libvirt_version}.")

        per_object(self, request, queryset, call, verb="Refreshed")

    @admin.action(description="Reconcile now (VM states from libvirt, foreign domains)", location=BOTH)
    def reconcile_now(self, request, queryset):
        def call(host):
            result = services.host_sync(host=host)
            if result.get("status") != "up":
                return messages.ERROR, f"{host.name}: {result.get('status')}: {result.get('error', '')}"
            level = messages.WARNING if result.get("drifted") else messages.SUCCESS
            return level, (f"{host.name}: {result['domains']} domain(s) seen, {result['drifted']} VM(s) drifted "
                           f"(marked from libvirt's state), {result['foreign']} foreign domain(s).")

        per_object(self, request, queryset, call, verb="Reconciled")


# --- foreign domains ----------------------------------------------------------------------------

FOREIGN_NOTE = ("Domains found on the hosts that this portal did not create (or whose portal record is gone). "
                "They are listed for information only and never touched: no action here starts, stops or "
                "deletes them. The list is refreshed by each reconcile.")


@admin.register(ForeignDomain)
class ForeignDomainAdmin(admin.ModelAdmin):
    list_display = ("name", "host_link", "state_badge", "uuid", "owner_hint", "first_seen", "last_seen")
    list_filter = ("host", "state")
    search_fields = ("name", "uuid", "owner_hint")
    list_select_related = ("host",)
    change_list_template = "admin/portal/change_list_note.html"
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, note_context(FOREIGN_NOTE, extra_context))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, note_context(FOREIGN_NOTE, extra_context))

    @admin.display(description="host", ordering="host__name")
    def host_link(self, obj):
        return link(obj.host)

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        return badge(obj.state, tone="muted")

    @admin.display(description="first seen", ordering="first_seen_at")
    def first_seen(self, obj):
        return when(obj.first_seen_at)

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, obj):
        return when(obj.last_seen_at)


# --- host operations: maintenance, activate, fence, declare down, power on/off (cluster.maintenance,
# cluster.power); each asks for confirmation first, then calls the service once per host ----------

def _confirm(modeladmin, request, queryset, *, action: str, title: str, question: str, consequence: str,
             confirm_label: str, offer_stop: bool = False, note=None):
    """The confirmation page of a host operation (the same shape as Django's delete confirmation)."""
    hosts = list(queryset)
    for host in hosts:
        host.note = note(host) if note else ""
    context = {**modeladmin.admin_site.each_context(request), "title": title, "subtitle": None,
               "opts": modeladmin.model._meta, "hosts": hosts, "action": action, "question": question,
               "consequence": consequence, "confirm_label": confirm_label, "offer_stop": offer_stop,
               "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
    return TemplateResponse(request, "admin/cluster/host/confirm_action.html", context)


def _vm_note(host) -> str:
    # reverse relation: cluster imports no vms. A host that does not answer shows its VMs as unknown: those
    # last seen running count too (they are the ones an administrator must be sure are off).
    live = ("running", "paused", "starting", "stopping", "rebooting", "migrating")
    vms = host.vms.filter(Q(status__in=live[:2]) | Q(status="unknown", known_status__in=live))
    running = vms.count()
    if not running:
        return "no VM running"
    unknown = vms.filter(status="unknown").count()
    ha = vms.filter(highly_available=True).count()
    return (f"{running} VM(s) running" + (f" when last seen ({unknown} now unknown)" if unknown else "")
            + (f", {ha} highly available" if ha else ""))


def _down_note(host) -> str:
    """The VMs on the host, and what confirming it down does to them (cluster.ha_outlook)."""
    return f"{_vm_note(host)}; once confirmed down: {ha_outlook(host)}"


@admin.action(permissions=["change"], description="Start maintenance (live-migrate its VMs away)", location=BOTH)
def start_maintenance(modeladmin, request, queryset):
    if not request.POST.get("post"):
        return _confirm(modeladmin, request, queryset, action="start_maintenance", title="Start maintenance",
                        question="Put these hosts into maintenance?", confirm_label="Yes, start maintenance",
                        consequence="No new VM lands on them; their running VMs are live-migrated to the hosts "
                                    "the scheduler picks. Stopped VMs stay defined where they are.",
                        offer_stop=True, note=_vm_note)
    stop = bool(request.POST.get("stop_unmovable"))

    def call(host):
        job = maintenance.host_maintenance_start(actor=request.user, via=Via.ADMIN, host=host, stop_unmovable=stop)
        if job is None:
            return messages.INFO, f"{host.name} is already in maintenance."
        return job_report(job, f"{host.name}: maintenance started, moving its VMs away.")

    per_object(modeladmin, request, queryset, call, verb="Started maintenance of")
    return None


@admin.action(permissions=["change"], description="Activate (out of maintenance)", location=BOTH)
def activate(modeladmin, request, queryset):
    def call(host):
        host = maintenance.host_activate(actor=request.user, via=Via.ADMIN, host=host)
        return messages.SUCCESS, f"{host.name} is active again."

    per_object(modeladmin, request, queryset, call, verb="Activated")


@admin.action(permissions=["change"], description="Fence (power agent): power off, confirmed down", location=BOTH)
def fence(modeladmin, request, queryset):
    if not request.POST.get("post"):
        return _confirm(modeladmin, request, queryset, action="fence", title="Fence hosts",
                        question="Fence these hosts through their power agent?", confirm_label="Yes, fence them",
                        consequence="Their power-off command runs now (whatever runs there stops at once); they "
                                    "are then confirmed down and their highly available VMs on shared storage "
                                    "restart on other hosts.",
                        note=_down_note)

    def call(host):
        result = power.host_fence(actor=request.user, via=Via.ADMIN, host=host)
        return messages.SUCCESS, f"Fenced {host.name} ({result.summary()}): confirmed down; {ha_outlook(host)}."

    per_object(modeladmin, request, queryset, call, verb="Fenced")
    return None


@admin.action(permissions=["change"], description="Declare down (you confirm it is off)", location=BOTH)
def declare_down(modeladmin, request, queryset):
    if not request.POST.get("post"):
        return _confirm(modeladmin, request, queryset, action="declare_down", title="Declare hosts down",
                        question="Do you confirm these hosts are powered off?", confirm_label="Yes, they are off",
                        consequence="Their highly available VMs are started on other hosts, on the same shared "
                                    "disks. If a host is in fact still running them, they would run twice: "
                                    "only confirm what you checked.", note=_down_note)

    def call(host):
        host = power.host_declare_down(actor=request.user, via=Via.ADMIN, host=host)
        return messages.SUCCESS, f"{host.name} is declared down: {ha_outlook(host)}."

    per_object(modeladmin, request, queryset, call, verb="Declared down")
    return None


@admin.action(permissions=["change"], description="Power on (power agent)", location=BOTH)
def power_on(modeladmin, request, queryset):
    def call(host):
        result = power.host_power_on(actor=request.user, via=Via.ADMIN, host=host, reason="from the admin")
        return messages.SUCCESS, f"Powered on {host.name} ({result.summary()}); it is up once the monitor sees it."

    per_object(modeladmin, request, queryset, call, verb="Powered on")


@admin.action(permissions=["change"], description="Power off (power agent, standby)", location=BOTH)
def power_off(modeladmin, request, queryset):
    if not request.POST.get("post"):
        return _confirm(modeladmin, request, queryset, action="power_off", title="Power hosts off",
                        question="Power these hosts off through their power agent?", confirm_label="Yes, power off",
                        consequence="They go on standby and get no VMs until powered on. A host on which domains "
                                    "run is refused: put it into maintenance first.", note=_vm_note)

    def call(host):
        result = power.host_power_off(actor=request.user, via=Via.ADMIN, host=host, reason="from the admin")
        return messages.SUCCESS, f"Powered off {host.name} ({result.summary()}): on standby."

    per_object(modeladmin, request, queryset, call, verb="Powered off")
    return None


HostAdmin.actions = [*HostAdmin.actions, start_maintenance, activate, fence, declare_down, power_on, power_off]


@admin.action(permissions=["change"], description="Balance now (apply the policy's proposed migrations)")
def balance_now(modeladmin, request, queryset):
    """For the clusters' admin (ClusterAdmin.actions): one balancing pass per selected cluster, now."""
    def call(cluster):
        started = maintenance.cluster_balance_now(actor=request.user, via=Via.ADMIN, cluster=cluster)
        if not started:
            return messages.INFO, f"{cluster.name}: nothing to move (or held back by the limits and the cooldown)."
        return messages.SUCCESS, f"{cluster.name}: " + ", ".join(
            f"{s['vm']} → {s['to']}" + (f" (refused: {s['error']})" if "error" in s else "") for s in started)

    per_object(modeladmin, request, queryset, call, verb="Balanced")




# --- clusters: scheduling policy (cluster.clusters validates; cluster.scheduler previews) ---------

from portal.exceptions import ValidationFailed as _ValidationFailed  # noqa: E402  (self-contained block)

from . import clusters as cluster_services  # noqa: E402
from .scheduler import Move, policy_names, propose_balancing  # noqa: E402


class ClusterForm(forms.ModelForm):
    """The policy is one of the registry's names; policy_properties are checked by the cluster service."""

    policy = forms.ChoiceField(choices=())

    class Meta:
        model = Cluster
        fields = ["name", "description", "policy", "policy_properties", "balancing_enabled", "power_saving_enabled",
                  "ha_enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["policy"].choices = [(name, name) for name in policy_names()]

    def _service_check(self, fieldname: str, check):
        try:
            return check(self.cleaned_data.get(fieldname))
        except _ValidationFailed as exc:
            raise forms.ValidationError(next(iter(exc.errors.values()))) from None

    def clean_policy(self):
        return self._service_check("policy", cluster_services.validate_policy)

    def clean_policy_properties(self):
        return self._service_check("policy_properties", cluster_services.validate_policy_properties)


def _vm_names(ids: list[int]) -> dict[int, str]:
    # VMs through the host's reverse relation: cluster sits below vms and does not import it.
    vm_model = Host._meta.get_field("vms").related_model
    return dict(vm_model.objects.filter(pk__in=ids).values_list("pk", "name"))


@admin.register(Cluster)
class ClusterAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = ClusterForm
    list_display = ("name", "policy", "balancing_enabled", "power_saving_enabled", "ha_enabled", "hosts_link")
    list_filter = ("policy", "balancing_enabled", "power_saving_enabled")
    search_fields = ("name",)
    actions = ["preview_balancing", balance_now]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_hosts=Count("hosts"))

    @admin.display(description="hosts", ordering="n_hosts")
    def hosts_link(self, obj):
        return changelist_link(Host, obj.n_hosts, cluster__id__exact=obj.pk)

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data[k] for k in form.Meta.fields if k in form.cleaned_data}

        def save():
            if change:
                return cluster_services.cluster_update(actor=request.user, via=Via.ADMIN, cluster=obj, **data)
            created = cluster_services.cluster_create(actor=request.user, via=Via.ADMIN, **data)
            obj.pk = created.pk
            return created

        self.call_service(request, save)

    @admin.action(description="Preview balancing (the moves the policy proposes now; nothing is moved)")
    def preview_balancing(self, request, queryset):
        for cluster in queryset:
            moves: list[Move] = propose_balancing(cluster=cluster)
            if not moves:
                self.message_user(request, f"{cluster.name} ({cluster.policy}): no move proposed.", messages.INFO)
                continue
            hosts = dict(Host.objects.filter(pk__in={m.source_host_id for m in moves}
                                             | {m.target_host_id for m in moves}).values_list("pk", "name"))
            names = _vm_names([m.vm_id for m in moves])
            for move in moves:
                self.message_user(
                    request, f"{cluster.name} ({cluster.policy}): move {names.get(move.vm_id, move.vm_id)} from "
                             f"{hosts.get(move.source_host_id)} to {hosts.get(move.target_host_id)}: {move.reason}",
                    messages.INFO)

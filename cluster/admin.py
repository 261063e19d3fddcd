"""Admin back-office for hosts and the domains found on them that the portal did not create.

A thin adapter: what libvirt owns is read-only here; registering, enabling and reconciling a host
call cluster.services with `via=Via.ADMIN`. VMs and pools are reached through the reverse relations
(cluster sits below vms and storage and imports neither).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.db.models import Count, Q
from django.http import HttpResponseRedirect

from portal.admin_helpers import (
    ServiceSaveMixin,
    admin_url,
    badge,
    changelist_link,
    link,
    live_vms_link,
    mib,
    note_context,
    per_object,
    when,
)
from portal.choices import Via

from . import services
from .choices import HostStatus
from .models import ForeignDomain, Host

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]


# --- hosts --------------------------------------------------------------------------------------

class HostAddForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = ["name", "uri", "domain_type", "enabled"]
        help_texts = {"uri": "e.g. qemu:///system, qemu+ssh://root@host/system, test:///default"}


@admin.register(Host)
class HostAdmin(ServiceSaveMixin, admin.ModelAdmin):
    list_display = ("name", "uri", "status_badge", "enabled", "effective_type", "kvm_probe", "cpus",
                    "memory", "vms_link", "last_seen")
    list_filter = ("status", "enabled", "domain_type")
    search_fields = ("name", "uri", "hostname")
    actions = ["refresh_facts", "reconcile_now", "delete_selected"]
    readonly_fields = ("status_badge", "effective_type", "kvm_probe", "hostname", "libvirt_version", "cpus",
                       "memory", "free_memory", "last_seen", "last_error", "vms_link", "foreign_link",
                       "pools_link")
    fieldsets = (
        (None, {"fields": ("name", "uri", "enabled", "domain_type")}),
        ("What libvirt reports", {"fields": ("status_badge", "effective_type", "kvm_probe", "hostname",
                                             "libvirt_version", "cpus", "memory", "free_memory", "last_seen",
                                             "last_error")}),
        ("On this host", {"fields": ("vms_link", "foreign_link", "pools_link")}),
    )

    def get_queryset(self, request):
        # VMs are counted through the reverse relation (cluster does not import vms); a deleted VM has deleted_at.
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=Q(vms__deleted_at__isnull=True)))

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("uri", *self.readonly_fields)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("name", "uri", "domain_type", "enabled"),
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
        return badge(obj.status, obj.get_status_display(), title=obj.last_error)

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

    # saving goes through the host service
    def save_model(self, request, obj, form, change):
        if not change:
            host = self.call_service(request, lambda: services.host_register(
                actor=request.user, via=Via.ADMIN, name=obj.name, uri=obj.uri, domain_type=obj.domain_type))
            if host is None:
                return
            if not obj.enabled:
                services.host_set_enabled(actor=request.user, via=Via.ADMIN, host=host, enabled=False)
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


# --- clusters: scheduling policy (cluster.clusters validates; cluster.scheduler previews) ---------

from portal.exceptions import ValidationFailed as _ValidationFailed  # noqa: E402  (self-contained block)

from . import clusters as cluster_services  # noqa: E402
from .models import Cluster  # noqa: E402
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
    actions = ["preview_balancing"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_hosts=Count("hosts"))

    @admin.display(description="hosts", ordering="n_hosts")
    def hosts_link(self, obj):
        return changelist_link(Host, obj.n_hosts, cluster__id__exact=obj.pk)

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data[k] for k in form.Meta.fields if k in form.cleaned_data}

        def save():
            target = obj if change else Cluster.objects.create(name=data["name"])
            if not change:
                obj.pk = target.pk
            return cluster_services.cluster_update(actor=request.user, via=Via.ADMIN, cluster=target, **data)

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

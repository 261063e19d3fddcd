"""Admin back-office for networks and their DHCP reservations.

A thin door like the others: the add and change form is checked by networks.services
(network_create / network_update), which also define the network on its hosts; deleting goes through
network_delete (refused while NICs use it); reservations are added and removed through
reservation_add / reservation_remove. A refusal comes back on the form, next to its field, and
nothing is saved: the save runs inside the admin's transaction, and on a refusal the form is shown
again with the service's words (see NetworkAdmin.changeform_view).

VMs and their NICs sit above networks: they are reached through the reverse relation
(`network.nics`), never imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.utils.html import format_html, format_html_join

from cluster.models import Host
from portal.admin_helpers import (
    EMPTY,
    ServiceDeleteMixin,
    admin_error_text,
    badge,
    changelist_link,
    link,
    note_context,
    when,
)
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed

from . import services
from .models import Network, NetworkHost, Reservation
from .selectors import network_placements
from .usage import network_users
from .validation import check_reservation_ip, plan_addresses, validate_hostname, validate_mac

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]

NETWORK_NOTE = ("Each network is one libvirt network of the same shape on each of its hosts: saving defines and "
                "starts it there (libvirt runs dnsmasq for DHCP and adds the firewall rules of isolated and NAT "
                "networks). Its addresses and mode change only while no NIC uses it; a network in use cannot be "
                "deleted. See docs/networks.md.")

MODE_SHORT = {Network.Mode.ISOLATED: "isolated", Network.Mode.NAT: "NAT", Network.Mode.BRIDGE: "bridged"}

# Form fields whose service argument has another name (`hosts` has a through model, so the admin's
# form cannot carry the model field itself).
SERVICE_ARG = {"on_hosts": "hosts"}
FORM_FIELD = {"hosts": "on_hosts"}
UPDATABLE = ("title", "description", "mode", "bridge", "cidr", "dhcp_start", "dhcp_end", "gateway", "dns_servers",
             "on_hosts", "groups", "is_public", "is_default")

# Apps above networks may say what a network mirrors (e.g. clouds: "Neutron cloud:net"): callables
# taking a Network and returning a short text or "" (networks itself knows none of them).
MIRROR_DESCRIBERS: list[Callable[[Network], str]] = []


def register_mirror_describer(fn: Callable[[Network], str]) -> None:
    if fn not in MIRROR_DESCRIBERS:
        MIRROR_DESCRIBERS.append(fn)


def register_mirror_filter(list_filter: type[admin.SimpleListFilter]) -> None:
    """A list filter of the networks changelist offered by an app above networks (e.g. "mirrors Neutron")."""
    if list_filter not in NetworkAdmin.list_filter:
        NetworkAdmin.list_filter = (*NetworkAdmin.list_filter, list_filter)


class Refused(Exception):
    """A service said no while the admin saved: carried out of the save (rolling back the admin's
    transaction) so the form can be shown again with the service's words."""

    def __init__(self, error: PortalError, *, reservation: int | None = None, prefix: str = "") -> None:
        super().__init__(error.message)
        self.error = error
        self.reservation = reservation  # index of the (new) reservation form it is about, if any
        self.prefix = prefix  # what it is about, for an error shown on top of the form


def _show_on_form(form: forms.BaseForm, exc: PortalError, field_names: dict[str, str] | None = None,
                  prefix: str = "") -> None:
    """A service's refusal on a form: each ValidationFailed message next to its field, anything else on top
    (in the words administrators read: the hypervisor's own text too)."""
    if isinstance(exc, ValidationFailed):
        for field, msgs in exc.errors.items():
            name = (field_names or {}).get(field, field)
            for msg in msgs:
                form.add_error(name if name in form.fields and not prefix else None, f"{prefix}{msg}")
        return
    form.add_error(None, f"{prefix}{admin_error_text(exc)}")


# --- networks -------------------------------------------------------------------------------------

class NetworkForm(forms.ModelForm):
    """The network's fields; the form only parses: network_create / network_update check everything."""

    on_hosts = forms.ModelMultipleChoiceField(
        queryset=Host.objects.order_by("name"), required=False, label="Hosts", widget=forms.CheckboxSelectMultiple,
        help_text="The network is defined and started on each of these hosts; VMs on it are placed there. "
                  "A host can be taken off only while no VM there uses the network.")
    dns_servers = forms.CharField(required=False, label="DNS servers",
                                  help_text="Addresses separated by commas: guests resolve through the host, which "
                                            "forwards to these (empty: the host's own resolvers).")
    refusal: Refused | None = None  # set by NetworkAdmin.get_form when the service refused this very input

    class Meta:
        model = Network
        fields = ["name", "title", "description", "mode", "bridge", "cidr", "gateway", "dhcp_start", "dhcp_end",
                  "dns_servers", "groups", "is_public", "is_default"]
        help_texts = {
            "name": "2–40 lowercase letters, digits or hyphens; libvirt names it <prefix>-net-NAME on each host. "
                    "It cannot be changed later.",
            "dhcp_start": "Leave both ends empty for the upper part of the range (from .10 in a /24).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and "on_hosts" in self.fields:
            self.fields["on_hosts"].initial = list(Host.objects.filter(network_placements__network=self.instance))
        if self.instance.pk:
            self.initial["dns_servers"] = ", ".join(self.instance.dns_servers or [])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.refusal is not None and self.refusal.reservation is None:
            _show_on_form(self, self.refusal.error, FORM_FIELD, prefix=self.refusal.prefix)
        return data

    def validate_unique(self) -> None:
        return None  # network_create says it in the same words as every other door

    def validate_constraints(self, exclude: Any = None) -> None:
        return None


class ReservationForm(forms.ModelForm):
    """One static lease; the same checks as reservation_add (which checks again when it saves)."""

    class Meta:
        model = Reservation
        fields = ["mac", "ip", "hostname"]

    def clean_mac(self) -> str:
        return self._check(lambda: validate_mac(self.cleaned_data.get("mac")))

    def clean_hostname(self) -> str:
        return self._check(lambda: validate_hostname(self.cleaned_data.get("hostname")))

    def clean_ip(self) -> str:
        ip = self.cleaned_data.get("ip")
        network = getattr(self.instance, "network", None)
        if ip and network is not None and network.manages_addresses:
            return self._check(lambda: check_reservation_ip(
                plan_addresses(network.cidr, network.dhcp_start, network.dhcp_end), ip))
        return ip

    @staticmethod
    def _check(fn: Any) -> Any:
        try:
            return fn()
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None

    def validate_unique(self) -> None:
        return None  # reservation_add says "already reserved" itself

    def validate_constraints(self, exclude: Any = None) -> None:
        return None


class ReservationFormSet(forms.BaseInlineFormSet):
    refusal: Refused | None = None  # set by ReservationInline.get_formset on the second pass

    def validate_unique(self) -> None:
        return None  # reservation_add names the address or MAC already reserved

    def clean(self) -> None:
        super().clean()
        refusal = self.refusal
        if refusal is not None and refusal.reservation is not None and refusal.reservation < len(self.forms):
            _show_on_form(self.forms[refusal.reservation], refusal.error)


class ReservationInline(admin.TabularInline):
    """Static DHCP leases: added and removed (not edited) through the reservation services, live on every host."""

    model = Reservation
    form = ReservationForm
    formset = ReservationFormSet
    extra = 1
    fields = ("mac", "ip", "hostname", "created")
    readonly_fields = ("created",)
    verbose_name = "DHCP reservation"
    verbose_name_plural = "DHCP reservations (the NIC with this MAC always gets this address; to change one, " \
                          "remove it and add it again)"

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # existing reservations are shown, removed or replaced; never edited in place

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return request.user.has_perm("networks.change_network")

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return request.user.has_perm("networks.change_network")

    def get_formset(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        refusal = getattr(request, NetworkAdmin.REFUSAL_ATTR, None)
        return type(formset.__name__, (formset,), {"refusal": refusal})

    @admin.display(description="added")
    def created(self, obj: Reservation) -> Any:
        return when(obj.created_at)


def _placement_badge(placement: NetworkHost) -> Any:
    if placement.last_error:
        return badge("error", "error", tone="bad", title=placement.last_error)
    if placement.active:
        return badge("running", "active", tone="ok", title=f"bridge {placement.bridge}" if placement.bridge else "")
    return badge("inactive", "inactive", tone="muted")


@admin.register(Network)
class NetworkAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    form = NetworkForm
    list_display = ("name", "title", "mode_col", "cidr_col", "dhcp_range", "hosts_col", "access_col", "is_public",
                    "is_default", "nics_col", "mirrors_col")
    list_filter = ("mode", "is_public", "is_default", ("placements__host", admin.RelatedOnlyFieldListFilter),
                   ("groups", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "title", "description", "cidr", "bridge")
    filter_horizontal = ("groups",)
    actions = ["reapply", "delete_selected"]
    inlines = [ReservationInline]
    change_list_template = "admin/portal/change_list_note.html"

    REFUSAL_ATTR = "_network_admin_refusal"
    APPLIED_ATTR = "_network_admin_applied"

    def get_queryset(self, request: Any) -> Any:
        # NICs belong to vms (above networks): counted through the reverse relation.
        return super().get_queryset(request).annotate(n_nics=Count("nics", distinct=True)).prefetch_related(
            "placements__host", "groups")

    def changelist_view(self, request: Any, extra_context: dict | None = None) -> Any:
        return super().changelist_view(request, note_context(NETWORK_NOTE, extra_context))

    def get_fieldsets(self, request: Any, obj: Network | None = None) -> Any:
        shape = ("Addresses", {"fields": ("mode", "cidr", "gateway", "dhcp_start", "dhcp_end", "dns_servers", "bridge"),
                               "description": "Isolated and NAT networks: an address range; the host takes its "
                                              "first address (or the one given) and serves DHCP and DNS. Bridged networks: only the name of "
                                              "an existing bridge on each host; addresses come from that LAN."})
        access = ("Hosts and access", {"fields": ("on_hosts", "groups", "is_public", "is_default")})
        if obj is None:
            return ((None, {"fields": ("name", "title", "description"), "description": NETWORK_NOTE}), shape, access)
        return (
            (None, {"fields": ("name", "title", "description")}),
            shape,
            access,
            ("On the hosts (from libvirt)", {"fields": ("libvirt_name", "libvirt_uuid", "placements_table")}),
            ("In use", {"fields": ("nics_in_use", "created")}),
        )

    def get_readonly_fields(self, request: Any, obj: Network | None = None) -> Any:
        if obj is None:
            return ()
        return ("name", "libvirt_name", "libvirt_uuid", "placements_table", "nics_in_use", "created")

    def get_inlines(self, request: Any, obj: Network | None = None) -> Any:
        # Reservations need the network's own address range: none on the add page or for bridged networks.
        return self.inlines if obj is not None and obj.manages_addresses else []

    def get_form(self, request: Any, obj: Network | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        refusal = getattr(request, self.REFUSAL_ATTR, None)
        return type(form.__name__, (form,), {"refusal": refusal})

    # columns
    @admin.display(description="mode", ordering="mode")
    def mode_col(self, obj: Network) -> str:
        short = MODE_SHORT.get(Network.Mode(obj.mode), obj.mode)
        return f"{short} ({obj.bridge})" if obj.mode == Network.Mode.BRIDGE and obj.bridge else short

    @admin.display(description="mirrors")
    def mirrors_col(self, obj: Network) -> str:
        said = [text for fn in MIRROR_DESCRIBERS if (text := fn(obj))]
        return "; ".join(said) or EMPTY

    @admin.display(description="address range", ordering="cidr")
    def cidr_col(self, obj: Network) -> str:
        if obj.mode == Network.Mode.BRIDGE:
            return "the bridge's LAN"
        return obj.cidr or EMPTY

    @admin.display(description="DHCP range")
    def dhcp_range(self, obj: Network) -> str:
        if obj.dhcp_start and obj.dhcp_end:
            return f"{obj.dhcp_start} – {obj.dhcp_end}"
        return EMPTY

    @admin.display(description="hosts (state)")
    def hosts_col(self, obj: Network) -> Any:
        placements = sorted(obj.placements.all(), key=lambda p: p.host.name)
        if not placements:
            return badge("none", "on no host yet", tone="warn")
        return format_html_join(" ", "{}&nbsp;{}", ((link(p.host), _placement_badge(p)) for p in placements))

    @admin.display(description="groups")
    def access_col(self, obj: Network) -> str:
        names = sorted(g.name for g in obj.groups.all())
        return ", ".join(names) if names else EMPTY

    @admin.display(description="NICs in use", ordering="n_nics")
    def nics_col(self, obj: Network) -> Any:
        count = getattr(obj, "n_nics", None)
        if count is None:
            count = obj.nics.count()
        vm_model = obj.nics.model._meta.get_field("vm").related_model  # vms sits above networks: no import
        return changelist_link(vm_model, count, nics__network__id__exact=obj.pk) if count else "0"

    @admin.display(description="libvirt name")
    def libvirt_name(self, obj: Network) -> str:
        return obj.libvirt_name

    @admin.display(description="UUID")
    def libvirt_uuid(self, obj: Network) -> str:
        return str(obj.uuid)

    @admin.display(description="on each host")
    def placements_table(self, obj: Network) -> Any:
        placements = list(network_placements(network=obj))
        if not placements:
            return "On no host yet: tick hosts above and save."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((link(p.host), _placement_badge(p), p.bridge or EMPTY, p.last_error or EMPTY, when(p.synced_at))
             for p in placements))
        return format_html('<table class="pinline"><thead><tr><th>host</th><th>state</th><th>bridge</th>'
                           '<th>last error</th><th>checked</th></tr></thead><tbody>{}</tbody></table>', rows)

    @admin.display(description="NICs on it")
    def nics_in_use(self, obj: Network) -> Any:
        users = network_users(obj)
        if not users:
            return "None: the network can be reshaped or deleted."
        return format_html("{} NIC(s): {}", len(users), ", ".join(users[:20]) + (" …" if len(users) > 20 else ""))

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Network) -> Any:
        return when(obj.created_at)

    # saving: the services decide; a refusal shows the form again with their words
    def changeform_view(self, request: Any, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None) -> Any:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as refused:
            # The admin's transaction was rolled back: nothing was saved. Show the same input again, with
            # the refusal next to its field (the form and the inline pick it up from the request).
            setattr(request, self.REFUSAL_ATTR, refused)
            if getattr(request, self.APPLIED_ATTR, False):
                self._resync(object_id)
            try:
                return super().changeform_view(request, object_id, form_url, extra_context)
            except Refused as again:  # never expected: the form above carries the refusal, so nothing is saved
                self.message_user(request, f"Not saved: {again.prefix}{admin_error_text(again.error)}",
                                  messages.ERROR)
                return HttpResponseRedirect(request.get_full_path())

    def _resync(self, object_id: str | None) -> None:
        """A service call of this save went through before a later one was refused: the database is back
        as it was, so the hosts are brought back in line with it (best effort; "Re-apply" does it again)."""
        network = Network.objects.filter(pk=object_id).first() if object_id and object_id.isdigit() else None
        if network is None:
            return
        for placement in network_placements(network=network):
            try:
                services.network_ensure_on_host(network=network, host=placement.host)
            except PortalError:
                pass  # recorded on the placement (last_error) and shown on the page

    def save_model(self, request: Any, obj: Network, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        try:
            if not change:
                network = services.network_create(
                    actor=request.user, via=Via.ADMIN, name=data["name"], mode=data["mode"], cidr=data["cidr"],
                    dhcp_start=data["dhcp_start"], dhcp_end=data["dhcp_end"], bridge=data["bridge"],
                    gateway=data["gateway"], dns_servers=data["dns_servers"], hosts=list(data["on_hosts"]), groups=list(data["groups"]), is_public=data["is_public"],
                    is_default=data["is_default"], title=data["title"], description=data["description"])
                obj.pk = network.pk
            else:
                changes = {SERVICE_ARG.get(f, f): data[f] for f in form.changed_data if f in UPDATABLE}
                for key in ("hosts", "groups"):
                    if key in changes:
                        changes[key] = list(changes[key])
                if changes:
                    services.network_update(actor=request.user, via=Via.ADMIN, network=obj, **changes)
                    setattr(request, self.APPLIED_ATTR, True)
        except PortalError as exc:
            raise Refused(exc) from exc
        obj.refresh_from_db()

    def save_related(self, request: Any, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        # Groups and hosts went to the service with the network; reservations go through theirs.
        for formset in formsets:
            if formset.model is Reservation:
                self._save_reservations(request, form.instance, formset)

    def _save_reservations(self, request: Any, network: Network, formset: Any) -> None:
        # What Django's change message (LogEntry) reads from a saved formset.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        deleted = set(formset.deleted_forms)
        for form in formset.deleted_forms:
            if form.instance.pk:
                reservation = form.instance
                try:
                    services.reservation_remove(actor=request.user, via=Via.ADMIN, reservation=reservation)
                except PortalError as exc:  # on top of the form: a row being deleted shows no errors
                    raise Refused(exc, prefix=f"Removing the reservation of {reservation.ip} for "
                                              f"{reservation.mac}: ") from exc
                formset.deleted_objects.append(form.instance)
                setattr(request, self.APPLIED_ATTR, True)
        for form in formset.extra_forms:
            if form in deleted or not form.has_changed():
                continue
            data = form.cleaned_data
            try:
                added = services.reservation_add(actor=request.user, via=Via.ADMIN, network=network,
                                                 mac=data["mac"], ip=data["ip"], hostname=data.get("hostname") or "")
            except PortalError as exc:
                raise Refused(exc, reservation=formset.forms.index(form)) from exc
            formset.new_objects.append(added)
            setattr(request, self.APPLIED_ATTR, True)

    # deleting: through network_delete, refused while NICs use the network
    def _in_use(self, network: Network) -> str | None:
        users = network_users(network)
        if not users:
            return None
        more = f" and {len(users) - 5} more" if len(users) > 5 else ""
        return (f"Cannot delete network {network.name}: {len(users)} NIC(s) use it ({', '.join(users[:5])}{more}). "
                "Remove those NICs or delete those VMs first.")

    def get_deleted_objects(self, objs: Any, request: Any) -> Any:
        # network_delete removes its placements and reservations itself: no delete permission needed on them.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def _delete(self, request: Any, network: Network) -> tuple[int, str]:
        hosts = [p.host.name for p in network_placements(network=network)]
        services.network_delete(actor=request.user, via=Via.ADMIN, network=network)
        where = f" and removed it from {', '.join(hosts)}" if hosts else ""
        return messages.SUCCESS, f"Deleted network {network.name}{where}."

    # re-apply: define and start each network again wherever it is placed, one message per host
    @admin.action(permissions=["change"], description="Re-apply on hosts (define and start it where it is placed)",
                  location=BOTH)
    def reapply(self, request: Any, queryset: Any) -> None:
        for network in queryset:
            placements = list(network_placements(network=network))
            if not placements:
                self.message_user(request, f"{network.name}: on no host yet; tick its hosts on its page.",
                                  messages.WARNING)
                continue
            for placement in placements:
                host = placement.host
                try:
                    done = services.network_ensure_on_host(network=network, host=host)
                except PortalError as exc:
                    self.message_user(request, f"{network.name} on {host.name}: failed: {admin_error_text(exc)}",
                                      messages.ERROR)
                    continue
                if done.active:
                    bridge = f" (bridge {done.bridge})" if done.bridge else ""
                    self.message_user(request, f"{network.name} on {host.name}: running{bridge}.", messages.SUCCESS)
                else:
                    self.message_user(request, f"{network.name} on {host.name}: defined but not running.",
                                      messages.WARNING)

"""Admin back-office for Neutron networks mirrored as portal networks (docs/openstack.md, "Neutron networks").

A thin door over clouds.neutron:
- "Networks mirrored from Neutron" (NeutronLink changelist): every link with its state and differences;
  actions "Show differences" (neutron_diff: recorded, nothing applied), "Apply Neutron's definition"
  (neutron_sync: each network says what was applied or why not) and "Unlink" (neutron_unlink: the portal
  network stays).
- A Neutron page per cloud (…/clouds/neutronlink/cloud/<id>/): its Neutron networks and subnets, which
  portal network mirrors each, and an Import form (mode, bridge, hosts) for the others.
- The networks admin's "mirrors" column (a describer the networks admin offers; networks knows no clouds).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from cluster.models import Host
from networks.admin import register_mirror_describer, register_mirror_filter
from networks.models import Network
from portal.admin_helpers import EMPTY, admin_error_text, badge, link, note_context, when
from portal.choices import Via
from portal.exceptions import PortalError

from . import neutron
from .models import Cloud, NeutronLink

STATE_TONE = {NeutronLink.State.IN_SYNC: "ok", NeutronLink.State.DIFFERS: "warn", NeutronLink.State.GONE: "bad"}
NOTE = ("Portal networks that mirror a Neutron network. \"Show differences\" compares them with Neutron now "
        "(nothing changes); \"Apply Neutron's definition\" changes the portal networks (addresses only while no VM "
        "uses them). Networks deleted in Neutron are shown as deleted and never removed here: unlink or delete the "
        "portal network yourself. Import more from a cloud's Neutron page: ")



class MirrorsNeutronFilter(admin.SimpleListFilter):
    """On the networks changelist: networks that mirror a Neutron network, by the link's state."""

    title = "mirrors Neutron"
    parameter_name = "neutron"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Mirrors a Neutron network"), ("no", "Mirrors none"),
                *[(value, label) for value, label in NeutronLink.State.choices]]

    def queryset(self, request: Any, queryset: Any) -> Any:
        value = self.value()
        if not value:
            return queryset
        links = NeutronLink.objects.values("network_id")
        if value == "no":
            return queryset.exclude(pk__in=links)
        if value in NeutronLink.State.values:
            links = links.filter(state=value)
        return queryset.filter(pk__in=links)


register_mirror_describer(neutron.mirror_text)
register_mirror_filter(MirrorsNeutronFilter)


class ImportForm(forms.Form):
    neutron_id = forms.CharField(widget=forms.HiddenInput)
    name = forms.CharField(required=False, help_text="Portal network name (default: from Neutron's).")
    mode = forms.ChoiceField(choices=Network.Mode.choices, initial=Network.Mode.ISOLATED)
    bridge = forms.CharField(required=False, help_text="Bridged: the existing bridge on each host, e.g. br0.")
    hosts = forms.ModelMultipleChoiceField(queryset=Host.objects.order_by("name"), required=False,
                                           widget=forms.CheckboxSelectMultiple,
                                           help_text="The portal hosts to define the network on.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Preselected: every enabled host, as the API and CLI do when no host is named.
        self.fields["hosts"].initial = list(Host.objects.filter(enabled=True).values_list("pk", flat=True))
    groups = forms.ModelMultipleChoiceField(queryset=Group.objects.order_by("name"), required=False)
    is_public = forms.BooleanField(required=False, label="open to all users")


def _diff_text(differences: list[dict[str, Any]]) -> Any:
    if not differences:
        return EMPTY
    return format_html_join(mark_safe("<br>"), "{}: {} → {}",
                            ((d["field"], d["portal"], d["neutron"]) for d in differences))


@admin.register(NeutronLink)
class NeutronLinkAdmin(admin.ModelAdmin):
    list_display = ("network_col", "cloud", "neutron_name", "neutron_network_id", "state_col", "differences_col",
                    "notes_col", "checked", "synced")
    list_filter = ("cloud", "state")
    search_fields = ("network__name", "neutron_name", "neutron_network_id")
    actions = ["show_differences", "apply", "unlink"]
    change_list_template = "admin/clouds/neutronlink/change_list.html"
    readonly_fields = ("cloud", "network", "neutron_network_id", "neutron_subnet_id", "neutron_name", "state",
                       "differences", "notes", "synced_at", "checked_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # links are made by importing from a cloud's Neutron page

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # "Unlink" goes through neutron_unlink (audited)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("cloud", "network")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        clouds = [(c.name, reverse("admin:clouds_neutron_cloud", args=[c.pk])) for c in Cloud.objects.all()]
        return super().changelist_view(request, note_context(NOTE, {**(extra_context or {}), "clouds": clouds}))

    @admin.display(description="portal network", ordering="network__name")
    def network_col(self, obj: NeutronLink) -> Any:
        return link(obj.network, obj.network.name)

    @admin.display(description="state", ordering="state")
    def state_col(self, obj: NeutronLink) -> Any:
        return badge(obj.state, obj.get_state_display(), tone=STATE_TONE.get(NeutronLink.State(obj.state)))

    @admin.display(description="differences")
    def differences_col(self, obj: NeutronLink) -> Any:
        return _diff_text(obj.differences)

    @admin.display(description="notes")
    def notes_col(self, obj: NeutronLink) -> Any:
        return format_html_join(mark_safe("<br>"), "{}", ((n,) for n in obj.notes)) if obj.notes else EMPTY

    @admin.display(description="checked", ordering="checked_at")
    def checked(self, obj: NeutronLink) -> Any:
        return when(obj.checked_at)

    @admin.display(description="synced", ordering="synced_at")
    def synced(self, obj: NeutronLink) -> Any:
        return when(obj.synced_at)

    # actions
    @admin.action(description="Show differences (compare with Neutron; nothing is changed)")
    def show_differences(self, request: HttpRequest, queryset: Any) -> None:
        for cloud in Cloud.objects.filter(pk__in=queryset.values("cloud")):
            try:
                report = neutron.neutron_diff(actor=request.user, cloud=cloud)
            except PortalError as exc:
                self.message_user(request, f"{cloud.name}: {admin_error_text(exc)}", messages.ERROR)
                continue
            counts = {s: sum(r.state == s for r in report.links) for s in NeutronLink.State.values}
            self.message_user(request, f"{cloud.name}: {counts['in_sync']} in sync, {counts['differs']} differ, "
                                       f"{counts['gone']} deleted in Neutron; {len(report.not_mirrored)} Neutron "
                                       "network(s) not mirrored.",
                              messages.WARNING if counts["differs"] or counts["gone"] else messages.SUCCESS)

    @admin.action(description="Apply Neutron's definition to the selected networks")
    def apply(self, request: HttpRequest, queryset: Any) -> None:
        for item in queryset.select_related("cloud", "network"):
            try:
                (report,) = neutron.neutron_sync(actor=request.user, via=Via.ADMIN, cloud=item.cloud,
                                                 network=item.network)
            except PortalError as exc:
                self.message_user(request, f"{item.network.name}: {admin_error_text(exc)}", messages.ERROR)
                continue
            _report_message(self, request, report)

    @admin.action(description="Unlink (the portal networks stay as they are)")
    def unlink(self, request: HttpRequest, queryset: Any) -> None:
        for item in queryset.select_related("cloud", "network"):
            try:
                neutron.neutron_unlink(actor=request.user, via=Via.ADMIN, link=item)
            except PortalError as exc:
                self.message_user(request, f"{item.network.name}: {admin_error_text(exc)}", messages.ERROR)
            else:
                self.message_user(request, f"{item.network.name} no longer mirrors Neutron.", messages.SUCCESS)

    # the per-cloud Neutron page
    def get_urls(self) -> list:
        page = path("cloud/<int:cloud_id>/", self.admin_site.admin_view(self.cloud_view),
                    name="clouds_neutron_cloud")
        return [page, *super().get_urls()]

    def cloud_view(self, request: HttpRequest, cloud_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        cloud = Cloud.objects.filter(pk=cloud_id).first()
        if cloud is None:
            return HttpResponseRedirect(reverse("admin:clouds_neutronlink_changelist"))
        here = reverse("admin:clouds_neutron_cloud", args=[cloud.pk])
        form = ImportForm(request.POST or None) if request.POST.get("do") == "import" else None
        if request.method == "POST":
            do = request.POST.get("do")
            if do == "import" and form is not None and form.is_valid():
                data = form.cleaned_data
                try:
                    made = neutron.neutron_import(
                        actor=request.user, via=Via.ADMIN, cloud=cloud, neutron_network_id=data["neutron_id"],
                        name=data["name"] or None, mode=data["mode"], bridge=data["bridge"],
                        hosts=list(data["hosts"]), groups=list(data["groups"]), is_public=data["is_public"])
                except PortalError as exc:
                    self.message_user(request, f"Nothing was imported: {admin_error_text(exc)}", messages.ERROR)
                else:
                    notes = f" Notes: {' '.join(made.notes)}" if made.notes else ""
                    self.message_user(request, f"Imported as network {made.network.name}.{notes}", messages.SUCCESS)
                    return HttpResponseRedirect(here)
            elif do == "diff":
                try:
                    diff = neutron.neutron_diff(actor=request.user, cloud=cloud)
                except PortalError as exc:
                    self.message_user(request, admin_error_text(exc), messages.ERROR)
                else:
                    self.message_user(request, _diff_summary(diff), messages.INFO)
                return HttpResponseRedirect(here)
            elif do == "sync":
                try:
                    for report in neutron.neutron_sync(actor=request.user, via=Via.ADMIN, cloud=cloud):
                        _report_message(self, request, report)
                except PortalError as exc:
                    self.message_user(request, admin_error_text(exc), messages.ERROR)
                return HttpResponseRedirect(here)
        try:
            found = neutron.neutron_networks(actor=request.user, cloud=cloud)
            error = ""
        except PortalError as exc:
            found, error = [], admin_error_text(exc)
        rows = [{"net": n, "form": form if form is not None and form.data.get("neutron_id") == n.id
                 else ImportForm(initial={"neutron_id": n.id, "name": neutron.portal_name(n)})} for n in found]
        context = {
            **self.admin_site.each_context(request), "title": f"Neutron networks of {cloud.name}", "cloud": cloud,
            "rows": rows, "error": error, "opts": self.model._meta, "has_view_permission": True,
            "links": NeutronLink.objects.filter(cloud=cloud).select_related("network"),
            "state_tone": STATE_TONE,
        }
        return TemplateResponse(request, "admin/clouds/neutronlink/cloud.html", context,
                                status=400 if form is not None and form.errors else 200)


def _diff_summary(diff: neutron.DiffReport) -> str:
    """One line after "Show differences": how many links are in sync, differ, or were deleted in Neutron."""
    if not diff.links:
        return "Compared with Neutron: no portal network mirrors a Neutron network of this cloud."
    count = {state: sum(1 for r in diff.links if r.state == state) for state in NeutronLink.State.values}
    return (f"Compared with Neutron: {count[NeutronLink.State.IN_SYNC]} in sync, "
            f"{count[NeutronLink.State.DIFFERS]} differing, {count[NeutronLink.State.GONE]} deleted in Neutron "
            "(nothing was changed).")


def _report_message(model_admin: admin.ModelAdmin, request: HttpRequest, report: neutron.LinkReport) -> None:
    name = report.link.network.name
    if report.error:
        model_admin.message_user(request, report.error, messages.ERROR)
    elif report.gone:
        model_admin.message_user(request, f"{name}: {report.gone} Not applied: unlink it or delete the network.",
                                 messages.WARNING)
    elif report.applied:
        model_admin.message_user(request, f"{name}: applied {', '.join(report.applied)}.", messages.SUCCESS)
    else:
        model_admin.message_user(request, f"{name}: in sync with Neutron.", messages.SUCCESS)

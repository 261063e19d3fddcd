"""Admin back-office for VM pools: pools with their VMs and free/taken counts. Saves and deletes go through
pools.services (pool_create / pool_update / pool_delete); memberships are read-only here (take and return
are the users' doors)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponseRedirect

from portal.admin_helpers import ServiceDeleteMixin, admin_error_text
from portal.choices import Via
from portal.exceptions import PortalError
from vms.choices import VMStatus

from . import services
from .models import PoolMember, VMPool
from .selectors import GONE

FIELDS = ("description", "image", "flavor", "vcpus", "memory_mib", "disk_gib", "prestarted", "max_size",
          "stateless", "everyone", "owner")


class PoolMemberInline(admin.TabularInline):
    model = PoolMember
    fields = ("vm", "vm_status", "taken_by", "taken_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="Status")
    def vm_status(self, obj: PoolMember) -> str:
        return obj.vm.get_status_display()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PoolMember]:
        return super().get_queryset(request).exclude(vm__status=VMStatus.DELETED).select_related("vm", "taken_by")


@admin.register(VMPool)
class VMPoolAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    list_display = ("name", "image", "free", "taken", "size", "max_size", "prestarted", "stateless", "owner")
    fields = ("name", *FIELDS, "groups")
    filter_horizontal = ("groups",)
    inlines = [PoolMemberInline]
    search_fields = ("name", "description")

    def get_queryset(self, request: HttpRequest) -> QuerySet[VMPool]:
        live = ~Q(members__vm__status__in=GONE)
        return super().get_queryset(request).select_related("image", "owner").annotate(
            n_live=Count("members", filter=live),
            n_taken=Count("members", filter=live & Q(members__taken_by__isnull=False)),
            n_free=Count("members", filter=Q(members__taken_by__isnull=True, members__vm__status=VMStatus.RUNNING)))

    @admin.display(description="Free (running)", ordering="n_free")
    def free(self, obj: VMPool) -> int:
        return getattr(obj, "n_free", 0)

    @admin.display(description="Taken", ordering="n_taken")
    def taken(self, obj: VMPool) -> int:
        return getattr(obj, "n_taken", 0)

    @admin.display(description="VMs", ordering="n_live")
    def size(self, obj: VMPool) -> int:
        return getattr(obj, "n_live", 0)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("name",) if obj is not None else ()

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"owner": request.user.pk}

    def save_model(self, request: HttpRequest, obj: VMPool, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {k: data.get(k) for k in FIELDS if k in data}
        groups = list(data.get("groups") or [])
        try:
            if change:
                saved = services.pool_update(actor=request.user, via=Via.ADMIN, pool=obj.pk, groups=groups, **fields)
            else:
                saved = services.pool_create(actor=request.user, via=Via.ADMIN, name=data["name"], groups=groups,
                                             **fields)
        except PortalError as exc:
            raise Refused(exc) from exc  # rolls the admin's transaction back: nothing is saved
        obj.pk = saved.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # The groups went through the service in save_model; the VMs inline is read-only (saves nothing).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None) -> Any:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as refused:
            self.message_user(request, f"Not saved: {admin_error_text(refused.error)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def _in_use(self, obj: VMPool) -> str | None:
        taken = obj.members.filter(taken_by__isnull=False).exclude(vm__status__in=GONE).count()
        return f"Pool {obj.name} has {taken} VM(s) taken; they must be returned first." if taken else None

    def _delete(self, request: HttpRequest, obj: VMPool) -> tuple[int, str]:
        queued = services.pool_delete(actor=request.user, via=Via.ADMIN, pool=obj)
        return messages.SUCCESS, f"Deleted pool {obj.name}; deleting {queued} VM(s)."


class Refused(Exception):
    """A service refused the admin's save: carried out of the save so the admin's transaction rolls back."""

    def __init__(self, error: PortalError) -> None:
        super().__init__(error.message)
        self.error = error

"""Admin back-office for consoles: who is watching which VM right now, share links, and ending them.

Read-only views of rows the services own; the actions call the services.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from portal.admin_helpers import EMPTY, badge, human_bytes, link, per_object, when
from portal.choices import Via

from .models import ConsoleSession, ConsoleSettings, ConsoleShare
from .services import _human_duration, console_session_terminate, console_share_revoke


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return [("yes", "Open"), ("no", "Closed")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(closed_at__isnull=False)
        return queryset


@admin.register(ConsoleSession)
class ConsoleSessionAdmin(ReadOnlyAdmin):
    list_display = ["id", "vm_link", "user_link", "kind", "tier", "role", "state", "opened", "duration",
                    "close_code", "close_reason"]
    list_filter = [OpenFilter, "kind", "tier", "role", "vm__host"]
    search_fields = ["user__username", "vm__name", "close_reason", "client"]
    date_hierarchy = "opened_at"
    list_select_related = ["vm", "user"]
    actions = ["end_sessions"]
    readonly_fields = [f.name for f in ConsoleSession._meta.fields] + ["traffic"]

    @admin.display(description="VM", ordering="vm__name")
    def vm_link(self, obj: ConsoleSession):
        return link(obj.vm)

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: ConsoleSession):
        return link(obj.user, obj.user.get_username())

    @admin.display(description="state")
    def state(self, obj: ConsoleSession):
        if obj.closed_at is None:
            if obj.terminate_requested_at:
                return badge("stopping", "Ending")
            return badge("running", "Open")
        return badge("stopped", "Closed")

    @admin.display(description="opened", ordering="opened_at")
    def opened(self, obj: ConsoleSession):
        return when(obj.opened_at)

    @admin.display(description="duration")
    def duration(self, obj: ConsoleSession) -> str:
        return _human_duration(obj.duration_seconds)

    @admin.display(description="traffic")
    def traffic(self, obj: ConsoleSession):
        return format_html("to guest {} · from guest {}", human_bytes(obj.bytes_to_guest) or EMPTY,
                           human_bytes(obj.bytes_from_guest) or EMPTY)

    @admin.action(description="End selected console sessions")
    def end_sessions(self, request, queryset):
        per_object(self, request, queryset.select_related("vm", "user"),
                   lambda s: console_session_terminate(actor=request.user, via=Via.ADMIN, session=s),
                   verb="Ending")


@admin.register(ConsoleShare)
class ConsoleShareAdmin(ReadOnlyAdmin):
    list_display = ["id", "vm_link", "created_by", "recipient", "state_badge", "created", "expires", "use_count",
                    "last_used"]
    list_filter = ["vm__host"]
    search_fields = ["vm__name", "recipient__username", "created_by__username", "note"]
    list_select_related = ["vm", "created_by", "recipient"]
    exclude = ["token_hash"]
    actions = ["revoke"]

    @admin.display(description="VM", ordering="vm__name")
    def vm_link(self, obj: ConsoleShare):
        return link(obj.vm)

    @admin.display(description="state")
    def state_badge(self, obj: ConsoleShare):
        tone = {"active": "ok", "expired": "muted", "revoked": "warn", "ended": "muted"}[obj.state]
        return badge(obj.state, obj.state.capitalize(), tone=tone)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ConsoleShare):
        return when(obj.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: ConsoleShare):
        return when(obj.expires_at)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: ConsoleShare):
        return when(obj.last_used_at)

    @admin.action(description="Revoke selected share links")
    def revoke(self, request, queryset):
        per_object(self, request, queryset,
                   lambda s: console_share_revoke(actor=request.user, via=Via.ADMIN, share=s) and None,
                   verb="Revoked")


@admin.register(ConsoleSettings)
class ConsoleSettingsAdmin(ReadOnlyAdmin):
    list_display = ["vm_link", "serial_sharing", "updated"]
    list_filter = ["serial_sharing"]
    search_fields = ["vm__name"]
    list_select_related = ["vm"]
    exclude = ["vnc_password"]  # a secret: only the relay needs it

    @admin.display(description="VM", ordering="vm__name")
    def vm_link(self, obj: ConsoleSettings):
        return link(obj.vm)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: ConsoleSettings):
        return when(obj.updated_at)

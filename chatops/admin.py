"""Admin for chatops: who is linked (and unlinking, through the service), subscriptions, and the
idempotency and notification records for troubleshooting. Quota requests are in portal's admin.
"""

from __future__ import annotations

from django.contrib import admin, messages

from portal.admin_helpers import EMPTY, ReadOnlyAdminMixin, link, per_object, when
from portal.choices import Via

from .models import JobWatch, LinkToken, QuotaRequestPost, SlackIdentity, SlackRequest, Subscription
from .services import identity_unlink


@admin.register(SlackIdentity)
class SlackIdentityAdmin(admin.ModelAdmin):
    """Links are made by users (`/vm link` + the portal page); administrators can only remove them."""

    list_display = ("slack_user_id", "slack_name", "team_id", "portal_user", "linked", "last_used")
    list_filter = ("team_id",)
    search_fields = ("slack_user_id", "slack_name", "user__username", "user__email")
    list_select_related = ("user",)
    readonly_fields = ("team_id", "slack_user_id", "slack_name", "user", "linked_at", "last_used_at")
    actions = ["unlink"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request, action_location=admin.ActionLocation.CHANGE_LIST):
        actions = super().get_actions(request, action_location)
        actions.pop("delete_selected", None)  # unlinking goes through the service (audited)
        return actions

    @admin.display(description="portal user", ordering="user__username")
    def portal_user(self, obj):
        return link(obj.user, obj.user.get_username())

    @admin.display(description="linked", ordering="linked_at")
    def linked(self, obj):
        return when(obj.linked_at)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj):
        return when(obj.last_used_at) if obj.last_used_at else EMPTY

    @admin.action(permissions=["delete"], description="Unlink (the Slack user can do nothing until relinked)")
    def unlink(self, request, queryset):
        def call(identity):
            identity_unlink(actor=request.user, via=Via.ADMIN, identity=identity)
            return messages.SUCCESS, f"Unlinked {identity.slack_user_id} from {identity.user.get_username()}."

        per_object(self, request, list(queryset), call, verb="Unlinked")

    def delete_model(self, request, obj):
        identity_unlink(actor=request.user, via=Via.ADMIN, identity=obj)


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("channel_id", "team_id", "owner", "events_list", "created_at")
    list_filter = ("team_id",)
    search_fields = ("channel_id", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = ("team_id", "channel_id", "owner", "events", "created_at")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="events")
    def events_list(self, obj):
        labels = dict(Subscription.Event.choices)
        return ", ".join(labels.get(e, e) for e in obj.events) or EMPTY


@admin.register(SlackRequest)
class SlackRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Idempotency records: one per Slack command or click that acted."""

    list_display = ("key", "kind", "slack_user_id", "summary", "created_at")
    list_filter = ("kind",)
    search_fields = ("key", "slack_user_id", "summary")


@admin.register(LinkToken)
class LinkTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Only hashes are stored: nothing here can be used to link an account."""

    list_display = ("slack_user_id", "slack_name", "team_id", "created_at", "expires_at", "used_at", "used_by")
    search_fields = ("slack_user_id", "slack_name", "used_by__username")
    exclude = ("token_hash", "response_url")


@admin.register(JobWatch)
class JobWatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("job", "channel_id", "thread_ts", "slack_user_id", "ephemeral", "created_at", "notified_at")
    search_fields = ("channel_id", "slack_user_id", "job__target_name")
    list_select_related = ("job",)
    exclude = ("response_url",)


@admin.register(QuotaRequestPost)
class QuotaRequestPostAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("quota_request", "channel_id", "ts", "posted_at")

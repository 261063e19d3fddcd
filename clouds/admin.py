"""Admin back-office for OpenStack cloud connections (issue #15; docs/openstack.md, "Connecting a cloud").

A thin door: saving goes through clouds.services (cloud_create / cloud_update), deleting through
cloud_delete (refused while an import or publication with the cloud runs), "Check connection" through
cloud_check. A refusal comes back on the form next to its field and nothing is saved.

The secret (a Keystone password or an application credential's secret) is a write-only field: it is never
rendered back into the page; left blank it keeps the stored one; "clear the stored secret" removes it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from portal.admin_helpers import EMPTY, ServiceDeleteMixin, admin_error_text, badge, note_context, when
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed

from . import services
from .admin_glance import GlanceCloudAdminMixin
from .models import Cloud

BOTH = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]
NOTE = ("A cloud connection lets the portal list and import Glance images and Neutron networks. Secrets are "
        "stored encrypted (or read from an environment variable of the portal's processes) and never shown "
        "again. See docs/openstack.md.")
SECRET_HELP = ("The Keystone password or the application credential's secret. Write-only: it is stored encrypted "
               "and never shown again. Leave blank to keep the stored one.")


class Refused(Exception):
    """A service said no while the admin saved: carried out of the save (rolling back the admin's transaction)
    so the form is shown again with the service's words next to the fields."""

    def __init__(self, error: PortalError) -> None:
        super().__init__(error.message)
        self.error = error


class CloudForm(forms.ModelForm):
    """The connection's fields plus the write-only secret; the form only parses: the services check."""

    secret = forms.CharField(required=False, strip=False, label="Password or secret", help_text=SECRET_HELP,
                             widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
    clear_secret = forms.BooleanField(required=False, label="Clear the stored secret",
                                      help_text="Remove the stored password or secret (e.g. when it now comes from "
                                                "an environment variable, or the cloud needs none).")
    refusal: Refused | None = None  # set by CloudAdmin.get_form when the service refused this very input

    class Meta:
        model = Cloud
        fields = ["name", "description", "auth_type", "clouds_yaml_name", "auth_url", "username",
                  "user_domain_name", "project_name", "project_domain_name", "application_credential_id",
                  "region_name", "image_endpoint", "network_endpoint", "verify_tls", "ca_file", "secret_env"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.refusal is not None:
            exc = self.refusal.error
            if isinstance(exc, ValidationFailed):
                for field, msgs in exc.errors.items():
                    for msg in msgs:
                        self.add_error(field if field in self.fields else None, msg)
            else:
                self.add_error(None, admin_error_text(exc))
        return data

    def validate_unique(self) -> None:
        return None  # cloud_create says it in the same words as every other door

    def validate_constraints(self, exclude: Any = None) -> None:
        return None


CHECK_MESSAGE_CHARS = 70


@admin.register(Cloud)
class CloudAdmin(GlanceCloudAdminMixin, ServiceDeleteMixin, admin.ModelAdmin):
    form = CloudForm
    # the links first: the list is wider than the page once check messages are long
    list_display = ("name", "glance_link", "neutron_link", "auth_col", "endpoint_col", "secret_col", "check_col",
                    "checked_col", "check_message")
    list_filter = ("auth_type", "last_check_ok")
    search_fields = ("name", "description", "auth_url", "clouds_yaml_name")
    actions = ["check_connection", "delete_selected"]
    change_list_template = "admin/portal/change_list_note.html"
    readonly_fields = ("secret_state", "check_col", "checked_col", "last_check_message")

    REFUSAL_ATTR = "_cloud_admin_refusal"

    class Media:
        js = ["clouds/cloud_form.js"]

    def get_fieldsets(self, request: HttpRequest, obj: Cloud | None = None) -> Any:
        sets: list[Any] = [
            (None, {"fields": ("name", "description", "auth_type")}),
            ("Keystone", {"classes": ("cloud-auth", "cloud-auth-password", "cloud-auth-v3applicationcredential"),
                          "fields": ("auth_url", "username", "user_domain_name", "project_name",
                                     "project_domain_name", "application_credential_id", "region_name"),
                          "description": "Keystone password: URL, user name, project (and their domains). "
                                         "Application credential: URL and the credential's ID."}),
            ("clouds.yaml", {"classes": ("cloud-auth", "cloud-auth-clouds_yaml"), "fields": ("clouds_yaml_name",),
                             "description": "The entry's name in clouds.yaml, found where openstacksdk looks: "
                                            "$OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml, "
                                            "/etc/openstack/clouds.yaml (of the portal's processes). The file holds "
                                            "its own credentials."}),
            ("Endpoints", {"fields": ("image_endpoint", "network_endpoint"),
                           "description": "Without Keystone: the Glance and/or Neutron URL (root URL, no /v2). "
                                          "With Keystone they override the catalog."}),
            ("Secret", {"classes": ("cloud-auth", "cloud-auth-password", "cloud-auth-v3applicationcredential"),
                        "fields": (("secret_state",) if obj is not None else ()) + ("secret", "clear_secret",
                                                                                     "secret_env")}),
            ("TLS", {"fields": ("verify_tls", "ca_file")}),
        ]
        if obj is not None:
            sets.append(("Last check", {"fields": ("check_col", "checked_col", "last_check_message")}))
        return sets

    def get_readonly_fields(self, request: HttpRequest, obj: Cloud | None = None) -> Any:
        return (("name",) if obj is not None else ()) + self.readonly_fields

    def get_form(self, request: Any, obj: Cloud | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["fields"] = [f for f in (kwargs.get("fields") or []) if f != "secret_state"] or None
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"refusal": getattr(request, self.REFUSAL_ATTR, None)})

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        return super().changelist_view(request, note_context(NOTE, extra_context))

    # columns
    @admin.display(description="authentication", ordering="auth_type")
    def auth_col(self, obj: Cloud) -> str:
        if obj.auth_type == Cloud.Auth.CLOUDS_YAML:
            return f"clouds.yaml: {obj.clouds_yaml_name}"
        return obj.get_auth_type_display()

    @admin.display(description="where")
    def endpoint_col(self, obj: Cloud) -> str:
        if obj.auth_type == Cloud.Auth.CLOUDS_YAML:
            return EMPTY
        if obj.auth_type == Cloud.Auth.NONE:
            return ", ".join(u for u in (obj.image_endpoint, obj.network_endpoint) if u) or EMPTY
        return obj.auth_url or EMPTY

    @admin.display(description="secret")
    def secret_col(self, obj: Cloud) -> str:
        return _secret_state(obj)

    @admin.display(description="stored secret")
    def secret_state(self, obj: Cloud) -> str:
        return _secret_state(obj)

    @admin.display(description="last check", ordering="last_check_ok")
    def check_col(self, obj: Cloud) -> Any:
        if obj.last_check_ok is None:
            return badge("unknown", "not checked")
        return badge("up", "ok", tone="ok") if obj.last_check_ok else badge("failed", "failed", tone="bad")

    @admin.display(description="checked", ordering="last_check_at")
    def checked_col(self, obj: Cloud) -> Any:
        return when(obj.last_check_at)

    @admin.display(description="check result")
    def check_message(self, obj: Cloud) -> str:
        # the list stays narrow enough for the links after it: the first sentence, the whole on hover
        text = obj.last_check_message
        if len(text) <= CHECK_MESSAGE_CHARS:
            return text or EMPTY
        return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(CHECK_MESSAGE_CHARS))

    @admin.display(description="Neutron networks")
    def neutron_link(self, obj: Cloud) -> str:
        return format_html('<a href="{}">Neutron networks</a>', reverse("admin:clouds_neutron_cloud", args=[obj.pk]))

    # actions
    @admin.action(permissions=["change"], description="Check connection (sign in, list Glance and Neutron)",
                  location=BOTH)
    def check_connection(self, request: HttpRequest, queryset: Any) -> None:
        for cloud in queryset:
            try:
                result = services.cloud_check(actor=request.user, via=Via.ADMIN, cloud=cloud)
            except PortalError as exc:
                self.message_user(request, f"{cloud.name}: {admin_error_text(exc)}", messages.ERROR)
                continue
            self.message_user(request, f"{cloud.name}: {result.message}",
                              messages.SUCCESS if result.ok else messages.ERROR)

    # saving: the services decide; a refusal shows the form again with their words
    def changeform_view(self, request: Any, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None) -> Any:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as refused:
            setattr(request, self.REFUSAL_ATTR, refused)
            try:
                return super().changeform_view(request, object_id, form_url, extra_context)
            except Refused as again:  # not expected: the form above carries the refusal, so nothing is saved
                self.message_user(request, f"Not saved: {admin_error_text(again.error)}", messages.ERROR)
                return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: Any, obj: Cloud, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        fields = {key: data[key] for key in services.FIELDS if key in data}
        try:
            if change:
                saved = services.cloud_update(actor=request.user, via=Via.ADMIN, cloud=obj,
                                              secret=data.get("secret") or None,
                                              clear_secret=bool(data.get("clear_secret")), **fields)
            else:
                saved = services.cloud_create(actor=request.user, via=Via.ADMIN, name=data.get("name") or "",
                                              secret=data.get("secret") or "", **fields)
        except PortalError as exc:
            raise Refused(exc) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        return None  # no relations: everything went to the service

    # deleting: through cloud_delete, refused while an import or publication with the cloud runs
    def _in_use(self, obj: Cloud) -> str | None:
        return services.cloud_busy_reason(obj)

    def _delete(self, request: Any, obj: Cloud) -> tuple[int, str]:
        services.cloud_delete(actor=request.user, via=Via.ADMIN, cloud=obj)
        return messages.SUCCESS, f"Removed cloud {obj.name} (images and networks that came from it stay)."


def _secret_state(obj: Cloud) -> str:
    if obj.secret_env:
        return f"from the environment variable {obj.secret_env}"
    if obj.secret_encrypted:
        return "stored (encrypted)"
    return "none"


from . import admin_neutron  # noqa: E402,F401  (Neutron networks: links, the per-cloud page, the networks column)

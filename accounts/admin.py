"""Admin back-office for SSH keys, and the read-only keys inline of the user page (see vms.admin).

Keys are added and deleted through accounts.services (the add form's clean() runs the same
validation, so a bad key is a field error here too); a key is never edited in place: delete it and
add the new one.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils.html import format_html

from portal.admin_helpers import ServiceSaveMixin, admin_error_text, admin_url, link, when
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed

from .models import SSHKey
from .services import sshkey_add, sshkey_delete
from .validation import NAME_MAX, clean_key_name, parse_public_key

User = get_user_model()


class SSHKeyAddForm(forms.ModelForm):
    """User, name and the pasted key; clean() checks the key the way every other door does."""

    name = forms.CharField(required=False, max_length=NAME_MAX,
                           help_text="Optional: the key's comment (or \"<type> key\") when left blank.")
    public_key = forms.CharField(strip=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
                                 help_text="One line of a .pub file: ssh-ed25519, ecdsa-sha2-nistp*, "
                                           "or ssh-rsa of 2048 bits or more.")

    class Meta:
        model = SSHKey
        fields = ["user", "name", "public_key"]

    def clean(self):
        data = super().clean()
        try:
            parsed = parse_public_key(data.get("public_key"))
            clean_key_name(data.get("name"), parsed)
        except ValidationFailed as exc:
            for field, msgs in exc.errors.items():
                for msg in msgs:
                    self.add_error(field if field in self.fields else None, msg)
        return data

    def validate_unique(self):  # duplicates are the service's to word (one message for every door)
        return None

    def validate_constraints(self, exclude=None):
        return None


@admin.register(SSHKey)
class SSHKeyAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = SSHKeyAddForm
    list_display = ("name", "owner", "type_bits", "fingerprint", "via", "created")
    list_filter = ("key_type", "created_via")
    search_fields = ("user__username", "fingerprint", "name")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    readonly = ("owner", "name", "type_bits", "fingerprint", "public_key", "via", "created")

    def get_fields(self, request, obj=None):
        return ("user", "name", "public_key") if obj is None else self.readonly

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The change page only shows the key: a key is replaced (delete, add), never edited.
        # (`?user=<id>` on the add page, as the user page links it, chooses the owner.)
        extra = dict(extra_context or {})
        if object_id is not None:
            extra.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().changeform_view(request, object_id, form_url, extra)

    @admin.display(description="user", ordering="user__username")
    def owner(self, obj):
        return link(obj.user, obj.user.get_username())

    @admin.display(description="type", ordering="key_type")
    def type_bits(self, obj):
        return obj.label

    @admin.display(description="via", ordering="created_via")
    def via(self, obj):
        return obj.get_created_via_display()

    @admin.display(description="added", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing on the change page is editable
        key = self.call_service(request, lambda: sshkey_add(
            actor=request.user, via=Via.ADMIN, user=form.cleaned_data["user"],
            public_key=form.cleaned_data["public_key"], name=form.cleaned_data.get("name") or ""))
        if key is not None:
            obj.pk = key.pk
            obj.refresh_from_db()

    def delete_model(self, request, obj):
        try:
            sshkey_delete(actor=request.user, via=Via.ADMIN, key=obj)
        except PortalError as exc:
            self.message_user(request, f"{obj.name}: not deleted: {admin_error_text(exc)}", messages.ERROR)

    def delete_queryset(self, request, queryset):
        # Django's "Delete selected" (with its confirmation page) ends here: one service call per key.
        for key in queryset.select_related("user"):
            self.delete_model(request, key)


class SSHKeyInline(admin.TabularInline):
    """A user's keys on their user page (read-only: added and deleted on the SSH keys pages)."""

    model = SSHKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "type_bits", "fingerprint", "created")
    readonly_fields = fields
    verbose_name_plural = "SSH keys"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="type")
    def type_bits(self, obj):
        return obj.label

    @admin.display(description="added")
    def created(self, obj):
        return when(obj.created_at)


def user_keys_summary(user):
    """For the user page: "N SSH keys" (their list) and a link to add one for this user."""
    if user is None or user.pk is None:
        return "—"
    count = SSHKey.objects.filter(user=user).count()
    listed = admin_url(SSHKey, "changelist", user__id__exact=user.pk)
    if listed is None:
        return f"{count} SSH key{'s' if count != 1 else ''}"
    add = reverse("admin:accounts_sshkey_add")
    return format_html('<a href="{}">{} SSH key{}</a> · <a href="{}?user={}">Add an SSH key for {}</a>', listed,
                       count, "s" if count != 1 else "", add, user.pk, user.get_username())

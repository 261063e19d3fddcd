"""Admin back-office for the image library, storage pools and VM disks.

Images are registered, changed and deleted through storage.services; pools and volumes are
created and removed by the host and VM services and are shown read-only here.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html_join

from cluster.models import Host
from portal.admin_helpers import (
    EMPTY,
    ReadOnlyAdminMixin,
    ServiceDeleteMixin,
    ServiceSaveMixin,
    admin_error_text,
    admin_url,
    changelist_link,
    human_bytes,
    job_report,
    link,
    live_vms_link,
    note_context,
    when,
)
from portal.choices import Via
from portal.exceptions import PortalError

from . import selectors, services
from .models import Image, StoragePool, Volume

IMAGE_NOTE = ("Registering an image copies the file into the host's storage pool (format given explicitly, "
              "never probed). The file path, volume and size are then owned by libvirt and read-only. "
              "Templates are made from stopped VMs (on the VM's page, the API or `manage.py vm template`). "
              "An image that thin clones are built on cannot be deleted; full copies do not keep it. “Build Debian 12 image” builds the "
              "Debian 12 cloud-init image from Debian's packages (2–3 minutes; progress on the job's page) "
              "and registers it on the first enabled host.")


class ImageRegisterForm(forms.ModelForm):
    """Everything image_register needs: the host whose pool receives the copy and the source file."""

    host = forms.ModelChoiceField(queryset=Host.objects.all(), help_text="The image is copied into this host's pool.")
    source_path = forms.CharField(label="Source file", max_length=500,
                                  help_text="Path of the image file on the portal server, e.g. /srv/images/debian.qcow2")

    class Meta:
        model = Image
        fields = ["name", "title", "description", "os_name", "format", "boot_mode", "kernel_path", "initrd_path",
                  "cmdline", "ready_marker", "min_disk_gib", "cloud_init", "login_user", "visibility", "is_default"]
        widgets = {"format": forms.Select(choices=[("qcow2", "qcow2"), ("raw", "raw")])}


@admin.register(Image)
class ImageAdmin(ServiceDeleteMixin, ServiceSaveMixin, admin.ModelAdmin):
    list_display = ("name", "title", "os_name", "boot_mode", "format", "size", "min_disk", "cloud_init",
                    "login_user", "kind", "visibility", "owner", "is_default", "host_link", "vms_link", "disks",
                    "full_copies", "created")
    list_filter = ("kind", "visibility", "boot_mode", "format", "cloud_init", "is_default", "pool__host")
    search_fields = ("name", "title", "os_name", "description")
    list_select_related = ("pool__host",)
    change_list_template = "admin/storage/image/change_list.html"
    actions = ["delete_selected"]
    change_fields = ("title", "description", "os_name", "cloud_init", "login_user", "visibility", "groups",
                     "is_default")
    change_readonly = ("name", "kind", "owner", "source", "pool", "volume_name", "path", "format", "size",
                       "actual_size", "checksum_sha256", "default_vcpus", "default_memory_mib", "boot_mode",
                       "kernel_path", "initrd_path", "cmdline", "ready_marker", "min_disk", "created", "vms_link",
                       "disks", "full_copies")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=Q(vms__deleted_at__isnull=True), distinct=True),  # via the reverse relation
            n_disks=Count("volumes", distinct=True), n_copies=Count("copies", distinct=True))

    def changelist_view(self, request, extra_context=None):
        context = note_context(IMAGE_NOTE, extra_context)
        context["image_builds"] = [
            {"label": state.recipe.label, "recipe": state.recipe.name,
             "url": reverse("admin:storage_image_build", args=[state.recipe.name]),
             "job_url": admin_url(state.job) if state.job else None,
             "job_progress": state.job.progress if state.job else 0}
            for state in selectors.image_recipe_states() if state.image is None]
        return super().changelist_view(request, context)

    # building: the image.build job (storage.services.image_build), from a button on the changelist
    def get_urls(self):
        build = path("build/<slug:recipe>/", self.admin_site.admin_view(self.build_view),
                     name="storage_image_build")
        return [build, *super().get_urls()]

    def build_view(self, request, recipe):
        changelist = admin_url(Image, "changelist")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            job = services.image_build(actor=request.user, via=Via.ADMIN, recipe=recipe)
        except PortalError as exc:
            self.message_user(request, admin_error_text(exc), messages.ERROR)
            return HttpResponseRedirect(changelist)
        level, text = job_report(job, f"Building image {recipe} (2–3 minutes); its progress is shown here.")
        self.message_user(request, text, level)
        return HttpResponseRedirect(admin_url(job) or changelist)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ImageRegisterForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return (
                (None, {"fields": ("host", "source_path", "name", "title", "description", "os_name", "format",
                                   "visibility", "is_default", "min_disk_gib"),
                        "description": IMAGE_NOTE}),
                ("Guest", {"fields": ("cloud_init", "login_user")}),
                ("Direct kernel boot (optional)", {"fields": ("boot_mode", "kernel_path", "initrd_path",
                                                              "cmdline", "ready_marker")}),
            )
        return (
            (None, {"fields": self.change_fields}),
            ("Stored in libvirt", {"fields": ("name", "kind", "owner", "source", "pool", "volume_name", "path",
                                              "format", "size", "actual_size", "checksum_sha256", "min_disk",
                                              "created")}),
            ("Template defaults", {"fields": ("default_vcpus", "default_memory_mib")}),
            ("Boot", {"fields": ("boot_mode", "kernel_path", "initrd_path", "cmdline", "ready_marker")}),
            ("Used by", {"fields": ("vms_link", "disks", "full_copies")}),
        )

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.change_readonly

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj):
        return human_bytes(obj.size_bytes)

    @admin.display(description="min. disk", ordering="min_disk_gib")
    def min_disk(self, obj):
        return f"{obj.min_disk_gib} GiB"

    @admin.display(description="host", ordering="pool__host__name")
    def host_link(self, obj):
        return link(obj.pool.host)

    @admin.display(description="VMs", ordering="live_vms")
    def vms_link(self, obj):
        return live_vms_link(obj, image__id__exact=obj.pk)

    @admin.display(description="actual size", ordering="actual_size_bytes")
    def actual_size(self, obj):
        return human_bytes(obj.actual_size_bytes)

    @admin.display(description="thin clones", ordering="n_disks")
    def disks(self, obj):
        """Disks that are qcow2 overlays on it (they keep it from being deleted)."""
        count = getattr(obj, "n_disks", None)
        if count is None:
            count = obj.volumes.count()
        return changelist_link(Volume, count, backing_image__id__exact=obj.pk)

    @admin.display(description="full copies", ordering="n_copies")
    def full_copies(self, obj):
        """Disks copied from it (standalone: they do not keep it)."""
        count = getattr(obj, "n_copies", None)
        if count is None:
            count = obj.copies.count()
        return changelist_link(Volume, count, copy_of__id__exact=obj.pk)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    # saving: register through image_register, edit through image_update
    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            image = self.call_service(request, lambda: services.image_register(
                actor=request.user, via=Via.ADMIN, host=data["host"], name=data["name"], title=data["title"],
                source_path=data["source_path"], fmt=data["format"], description=data["description"],
                os_name=data["os_name"], boot_mode=data["boot_mode"], kernel_path=data["kernel_path"],
                initrd_path=data["initrd_path"], cmdline=data["cmdline"], ready_marker=data["ready_marker"],
                min_disk_gib=data["min_disk_gib"], cloud_init=data["cloud_init"], login_user=data["login_user"],
                is_default=data["is_default"]))
            if image is None:
                return
            if data["visibility"] != Image.Visibility.PUBLIC:
                services.image_update(actor=request.user, via=Via.ADMIN, image=image, visibility=data["visibility"])
            obj.pk = image.pk
            obj.refresh_from_db()
            return
        if form.changed_data:
            self.call_service(request, lambda: services.image_update(
                actor=request.user, via=Via.ADMIN, image=obj,
                **{f: data[f] for f in self.change_fields if f in form.changed_data}))

    # deleting: through image_delete, refused while VMs or disks use the image
    def _in_use(self, image) -> str | None:
        deps = services.image_dependents(image=image)
        names = sorted({n for found in deps.values() for n in found})
        if names:
            return (f"Cannot delete image {image.name}: VMs depend on it ({', '.join(names[:10])}"
                    f"{' …' if len(names) > 10 else ''}). Delete those VMs first.")
        return None

    def _delete(self, request, image):
        services.image_delete(actor=request.user, via=Via.ADMIN, image=image)
        return messages.SUCCESS, f"Deleted image {image.name} and its base volume."


@admin.register(StoragePool)
class StoragePoolAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Pools are created by host registration (pool_ensure); shown here for reference."""

    list_display = ("name", "host_link", "path", "images_link", "volumes_link")
    list_filter = ("host",)
    search_fields = ("name", "path", "host__name")
    list_select_related = ("host",)
    readonly_fields = ("name", "host_link", "path", "images_link", "volumes_link")
    fields = readonly_fields
    actions = None

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_images=Count("images", distinct=True),
                                                      n_volumes=Count("volumes", distinct=True))

    @admin.display(description="host", ordering="host__name")
    def host_link(self, obj):
        return link(obj.host)

    @admin.display(description="images", ordering="n_images")
    def images_link(self, obj):
        return changelist_link(Image, getattr(obj, "n_images", None) or obj.images.count(), pool__id__exact=obj.pk)

    @admin.display(description="VM disks", ordering="n_volumes")
    def volumes_link(self, obj):
        return changelist_link(Volume, getattr(obj, "n_volumes", None) or obj.volumes.count(),
                               pool__id__exact=obj.pk)


VOLUME_NOTE = ("VM disks are created by the VM's create job and removed by its delete job (through the VM "
               "actions); they are read-only here.")


@admin.register(Volume)
class VolumeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("name", "attached_to", "capacity", "format", "backing_image", "copy_of", "host", "created")
    list_filter = ("pool__host", "format", ("backing_image", admin.RelatedOnlyFieldListFilter),
                   ("copy_of", admin.RelatedOnlyFieldListFilter), "pool")
    search_fields = ("name", "path", "attachments__vm__name", "attachments__vm__uuid")
    list_select_related = ("pool__host", "backing_image", "copy_of")
    readonly_fields = ("name", "attached_to", "pool", "path", "format", "capacity", "backing_image", "copy_of",
                       "created")
    fields = readonly_fields
    change_list_template = "admin/portal/change_list_note.html"
    actions = None

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attachments__vm")

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, note_context(VOLUME_NOTE, extra_context))

    @admin.display(description="attached to")
    def attached_to(self, obj):
        # Attachments belong to the VMs' app (vms.VMDisk), reached through the reverse relation.
        rows = [(link(a.vm), a.target, " (read-only)" if a.readonly else "") for a in obj.attachments.all()]
        return format_html_join(", ", "{} as {}{}", rows) if rows else EMPTY

    @admin.display(description="capacity", ordering="capacity_gib")
    def capacity(self, obj):
        return f"{obj.capacity_gib} GiB"

    @admin.display(description="host", ordering="pool__host__name")
    def host(self, obj):
        return link(obj.pool.host)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

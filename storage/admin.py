"""Admin back-office for the image library, storage pools and VM disks.

Images are imported (a job: storage.imports), changed and deleted through the storage services; pools and volumes are
created and removed by the host and VM services and are shown read-only here.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin import ActionLocation
from django.contrib.admin.options import IS_POPUP_VAR, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

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
from portal.web import form_error

from . import domains, imageio, selectors, services
from .imports import image_import
from .models import Image, StoragePool, Volume

IMAGE_NOTE = ("“Add image” imports an image from a file on the portal server (inside the import directories) or "
              "from a URL, as a job: the format is detected and checked (backing files, external data files, "
              "VMDK descriptors, corrupt and oversized images are refused), converted to qcow2 (ISOs are kept as "
              "they are) and copied into the host's pool. The file path, volume and sizes are then owned by libvirt "
              "and read-only. Templates are made from stopped VMs (on the VM's page, the API or `manage.py vm template`). "
              "An image that thin clones are built on cannot be deleted; full copies do not keep it. “Build Debian 12 image” builds "
              "the Debian 12 cloud-init image from Debian's packages (2–3 minutes; progress on the job's page) and "
              "registers it on the first enabled host.")


class ImageImportForm(forms.Form):
    """Everything image_import needs from an administrator: a host file or a URL, and the image's presentation."""

    source = forms.CharField(
        label="File or URL", max_length=2000,
        help_text="A file on the portal server inside the import directories (e.g. /srv/images/debian.qcow2), "
                  "or an http:// or https:// URL.")
    sha256 = forms.CharField(label="SHA-256", required=False, max_length=64, help_text="Optional: checked first.")
    name = forms.SlugField(max_length=60, help_text="Lowercase letters, digits and hyphens; unique.")
    title = forms.CharField(max_length=100, required=False)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    os_name = forms.CharField(label="OS", max_length=100, required=False)
    format = forms.ChoiceField(choices=[("", "detect"), *((f, f) for f in (*imageio.FORMATS, *imageio.CONTAINERS))],
                               required=False, help_text="What the file is; refused if it is something else.")
    kind = forms.ChoiceField(choices=[("", "from the format"), *Image.Kind.choices], required=False)
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False,
                                  help_text="Whose pool stores it (default: the first enabled host).")
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.order_by("username"), required=False,
                                   help_text="Blank: the library. A user's image counts against their disk quota.")
    visibility = forms.ChoiceField(choices=[("", "public (library) / private (a user's)"),
                                            *Image.Visibility.choices], required=False)
    groups = forms.ModelMultipleChoiceField(queryset=Group.objects.all(), required=False)
    cloud_init = forms.BooleanField(label="cloud-init", required=False)
    login_user = forms.CharField(max_length=32, required=False)
    min_disk_gib = forms.IntegerField(min_value=1, initial=1, label="Min. disk (GiB)")

    def service_kwargs(self) -> dict:
        d = self.cleaned_data
        source = d["source"].strip()
        is_url = "://" in source
        return {"source": "url" if is_url else "path", "url": source if is_url else None,
                "path": None if is_url else source, "sha256": d["sha256"] or None, "name": d["name"],
                "title": d["title"], "description": d["description"], "os_name": d["os_name"],
                "fmt": d["format"] or None, "kind": d["kind"] or None, "host": d["host"], "owner": d["owner"],
                "visibility": d["visibility"] or None, "groups": list(d["groups"]), "cloud_init": d["cloud_init"],
                "login_user": d["login_user"], "min_disk_gib": d["min_disk_gib"]}


_image_actions: list = []


def register_image_admin_action(action) -> None:
    """Offer one more admin action on images (an app above storage registers it in its ready())."""
    if action not in _image_actions:
        _image_actions.append(action)


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
    change_readonly = ("name", "kind", "owner", "pool", "volume_name", "path", "format", "source", "source_format",
                       "size", "actual_size", "checksum_sha256", "default_vcpus", "default_memory_mib", "boot_mode",
                       "kernel_path", "initrd_path", "cmdline", "ready_marker", "min_disk", "created", "vms_link",
                       "disks", "full_copies", "host_copies")

    def get_actions(self, request, action_location=ActionLocation.CHANGE_LIST):
        actions = super().get_actions(request, action_location)
        if not actions and (self.actions is None or IS_POPUP_VAR in request.GET):
            return actions
        for action in _image_actions:
            found = self.get_action(action, action_location)
            if found is not None:
                actions[found.name] = found
        return actions

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

    def get_fieldsets(self, request, obj=None):
        return (
            (None, {"fields": self.change_fields}),
            ("Stored in libvirt", {"fields": ("name", "kind", "owner", "pool", "volume_name", "path", "format",
                                              "source", "source_format", "size", "actual_size", "checksum_sha256",
                                              "min_disk", "created")}),
            ("Template defaults", {"fields": ("default_vcpus", "default_memory_mib")}),
            ("Boot", {"fields": ("boot_mode", "kernel_path", "initrd_path", "cmdline", "ready_marker")}),
            ("Used by", {"fields": ("vms_link", "disks", "full_copies")}),
            ("Copies on other hosts", {"fields": ("host_copies",)}),
        )

    # adding: an import job (storage.imports.image_import) from a file on the server or a URL
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise DjangoPermissionDenied
        form = ImageImportForm(request.POST or None, initial={"min_disk_gib": 1})
        if request.method == "POST" and form.is_valid():
            try:
                job = image_import(actor=request.user, via=Via.ADMIN, **form.service_kwargs())
            except PortalError as exc:
                form_error(form, exc, user=request.user)
            else:
                level, text = job_report(job, f"Importing image {form.cleaned_data['name']}; its progress is shown "
                                              "on the job's page.")
                self.message_user(request, text, level)
                return HttpResponseRedirect(admin_url(job) or admin_url(Image, "changelist"))
        context = {
            **self.admin_site.each_context(request), "title": "Import an image", "form": form,
            "opts": self.model._meta, "has_view_permission": True, "subtitle": None, "note": IMAGE_NOTE,
            "submit_label": "Import image", "nothing_done": "Nothing was imported: please correct the errors below.",
        }
        return TemplateResponse(request, "admin/storage/form.html", context,
                                status=400 if form.errors else 200)

    def get_readonly_fields(self, request, obj=None):
        return self.change_readonly

    @admin.display(description="actual size", ordering="actual_size_bytes")
    def actual_size(self, obj):
        return human_bytes(obj.actual_size_bytes)

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

    @admin.display(description="host copies")
    def host_copies(self, obj):
        """Its copies in other hosts' pools (storage.copies; made when a VM there needs them, read-only)."""
        copies = list(obj.host_copies.select_related("pool__host").order_by("pool__host__name"))
        if not copies:
            return "None: VMs on other hosts get a copy when they are created there."
        return format_html_join(
            "", "<div>{}: {} ({}){}</div>",
            ((c.pool.host.name, c.path or c.volume_name, human_bytes(c.size_bytes) if c.path else "being copied",
              f"; kernel {c.kernel_path}, initrd {c.initrd_path}" if c.kernel_path else "") for c in copies))

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    # saving: edits through image_update (adding is the import form above)
    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change and form.changed_data:
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


POOL_NOTE = ("Each row is a storage pool on one host; pools of one name make a storage domain (the “hosts” column "
             "lists every host that sees it). Each host has the portal's pool (made when the host is registered, in "
             "PORTAL_STORAGE_DIR or the host's --storage-dir). “Add storage pool” adds a domain to one or more hosts "
             "through libvirt: a local directory, a shared directory mounted at the same path on every host (NFS: "
             "disks migrate without copying, HA restarts VMs elsewhere; marking it shared is your word), or a "
             "GlusterFS volume libvirt mounts. Paths lie inside PORTAL_STORAGE_ALLOWED_ROOTS. Capacity and use are "
             "refreshed by the monitor and by the “Refresh capacity” action; a domain in use cannot be deleted.")


class StoragePoolAddForm(forms.Form):
    """What pool_add (one dir pool) or domains.domain_add (a domain of any kind on several hosts) needs."""

    host = forms.ModelChoiceField(queryset=Host.objects.order_by("name"))
    other_hosts = forms.ModelMultipleChoiceField(
        queryset=Host.objects.order_by("name"), required=False,
        help_text="More hosts that get the same domain (a shared or GlusterFS domain: every host that mounts it).")
    name = forms.CharField(max_length=100, help_text="The libvirt pool's name, e.g. nfs (letters, digits, . _ -).")
    kind = forms.ChoiceField(choices=[("", "Local directory (one host)"), *StoragePool.Kind.choices], required=False)
    content = forms.ChoiceField(choices=StoragePool.Content.choices, initial=StoragePool.Content.DATA, required=False)
    path = forms.CharField(max_length=400, required=False,
                           help_text="Absolute directory on the host(s), inside PORTAL_STORAGE_ALLOWED_ROOTS, e.g. "
                                     "/srv/nfs/vmportal (libvirt makes it if missing). GlusterFS: the mount point "
                                     "(default PORTAL_STORAGE_MOUNT_DIR/name).")
    shared = forms.BooleanField(required=False, help_text="The same storage at the same path on every host "
                                                          "(e.g. NFS mounted there).")
    source_host = forms.CharField(max_length=255, required=False, help_text="GlusterFS: the server.")
    source_name = forms.CharField(max_length=255, required=False, help_text="GlusterFS: the volume's name.")


def _usage_bar(used: int, capacity: int) -> str:
    percent = round(100 * used / capacity) if capacity else 0
    colour = "#ba2121" if percent >= 90 else "#e0a800" if percent >= 75 else "#417690"
    return format_html('<div title="{} of {} used ({}%)" style="width:8em;height:.8em;background:#ddd;'
                       'border-radius:2px"><div style="width:{}%;height:100%;background:{};border-radius:2px">'
                       '</div></div><small>{} free of {}</small>', human_bytes(used), human_bytes(capacity),
                       percent, min(percent, 100), colour, human_bytes(max(capacity - used, 0)),
                       human_bytes(capacity))


@admin.register(StoragePool)
class StoragePoolAdmin(ServiceDeleteMixin, ServiceSaveMixin, admin.ModelAdmin):
    """Pools (a storage domain on one host): added through storage.services.pool_add / domains.domain_add (made in
    libvirt on the hosts), `shared` changed through pool_configure, capacity refreshed and pools deleted through
    storage.domains (refused while in use); everything else is libvirt's and read-only."""

    list_display = ("name", "host_link", "kind", "content", "usage", "domain_hosts", "path", "shared",
                    "images_link", "volumes_link", "state")
    list_filter = ("kind", "content", "host", "shared", "active")
    search_fields = ("name", "path", "host__name", "source_host", "source_name")
    list_select_related = ("host",)
    readonly_fields = ("name", "host_link", "kind", "content", "path", "source_host", "source_name", "usage",
                       "domain_hosts", "state", "refreshed_at", "images_link", "volumes_link")
    fields = ("name", "host_link", "kind", "content", "path", "source_host", "source_name", "shared", "usage",
              "domain_hosts", "state", "refreshed_at", "images_link", "volumes_link")
    change_list_template = "admin/portal/change_list_note.html"
    actions = ["refresh_capacity", "delete_selected"]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, note_context(POOL_NOTE, extra_context))

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise DjangoPermissionDenied
        form = StoragePoolAddForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            d = form.cleaned_data
            hosts = [d["host"], *[h for h in d["other_hosts"] if h != d["host"]]]
            d["content"] = d["content"] or StoragePool.Content.DATA
            try:
                if not d["kind"] and len(hosts) == 1 and d["content"] == StoragePool.Content.DATA:
                    pool = services.pool_add(actor=request.user, via=Via.ADMIN, host=d["host"], name=d["name"],
                                             path=d["path"], shared=d["shared"])
                    text = (f"Added pool {pool.name} on {pool.host.name} at {pool.path}"
                            + (" (shared)." if pool.shared else "."))
                else:
                    kind = d["kind"] or (StoragePool.Kind.SHARED if d["shared"] else StoragePool.Kind.DIR)
                    pools = domains.domain_add(actor=request.user, via=Via.ADMIN, name=d["name"], kind=kind,
                                               hosts=hosts, path=d["path"], content=d["content"],
                                               source_host=d["source_host"], source_name=d["source_name"])
                    text = (f"Added storage domain {pools[0].name} ({kind}, {d['content']}) on "
                            f"{', '.join(p.host.name for p in pools)} at {pools[0].path}.")
            except PortalError as exc:
                form_error(form, exc, user=request.user)
            else:
                self.message_user(request, text, messages.SUCCESS)
                return HttpResponseRedirect(admin_url(StoragePool, "changelist"))
        context = {
            **self.admin_site.each_context(request), "title": "Add a storage pool", "form": form,
            "opts": self.model._meta, "has_view_permission": True, "subtitle": None, "note": POOL_NOTE,
            "submit_label": "Add pool", "nothing_done": "No pool was added: please correct the errors below.",
        }
        return TemplateResponse(request, "admin/storage/form.html", context, status=400 if form.errors else 200)

    def save_model(self, request, obj, form, change):
        if change and "shared" in form.changed_data:
            self.call_service(request, lambda: services.pool_configure(
                actor=request.user, via=Via.ADMIN, pool=obj, shared=form.cleaned_data["shared"]))

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_images=Count("images", distinct=True),
                                                      n_volumes=Count("volumes", distinct=True))

    @admin.action(description="Refresh capacity and use of the selected pools' domains")
    def refresh_capacity(self, request, queryset):
        names = sorted(set(queryset.values_list("name", flat=True)))
        for name in names:
            try:
                domain = domains.domain_refresh(actor=request.user, via=Via.ADMIN, name=name)[0]
            except PortalError as exc:
                self.message_user(request, format_html("{}: {}", name, admin_error_text(exc)), messages.ERROR)
                continue
            level = messages.WARNING if domain.errors else messages.SUCCESS
            self.message_user(request, f"{name}: {human_bytes(domain.allocation_bytes)} used of "
                                       f"{human_bytes(domain.capacity_bytes)}" + "".join(f"; {e}" for e in domain.errors),
                              level)

    # deleting: through domains.domain_remove, refused while images, disks, copies or backups use the pool
    def _in_use(self, pool) -> str | None:
        users = domains.pool_users(pool)
        if users:
            return f"Cannot delete pool {pool.name} of host {pool.host.name}: in use ({'; '.join(users)})."
        return None

    def _delete(self, request, pool):
        domains.domain_remove(actor=request.user, via=Via.ADMIN, name=pool.name, host=pool.host)
        return messages.SUCCESS, f"Removed pool {pool.name} from host {pool.host.name} (its files stay)."

    @admin.display(description="host", ordering="host__name")
    def host_link(self, obj):
        return link(obj.host)

    @admin.display(description="capacity and use")
    def usage(self, obj):
        if not obj.refreshed_at:
            return EMPTY
        return _usage_bar(obj.allocation_bytes, obj.capacity_bytes)

    @admin.display(description="hosts of the domain")
    def domain_hosts(self, obj):
        names = StoragePool.objects.filter(name=obj.name).order_by("host__name").values_list("host__name", flat=True)
        return ", ".join(names)

    @admin.display(description="state", boolean=False)
    def state(self, obj):
        return "running" if obj.active else f"not running: {obj.last_error or 'stopped'}"

    @admin.display(description="images", ordering="n_images")
    def images_link(self, obj):
        return changelist_link(Image, getattr(obj, "n_images", None) or obj.images.count(), pool__id__exact=obj.pk)

    @admin.display(description="VM disks", ordering="n_volumes")
    def volumes_link(self, obj):
        return changelist_link(Volume, getattr(obj, "n_volumes", None) or obj.volumes.count(),
                               pool__id__exact=obj.pk)


class DataDiskFilter(admin.SimpleListFilter):
    """Data disks (users' and teams', attachable, may outlive VMs) or VMs' own disks (boot disks, seeds)."""

    title = "kind"
    parameter_name = "data_disk"

    def lookups(self, request, model_admin):
        return [("yes", "Data disks"), ("no", "VMs' own disks (boot, seed)")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(owner__isnull=False)
        if self.value() == "no":
            return queryset.filter(owner__isnull=True)
        return queryset


VOLUME_NOTE = ("VM disks are created by the VM's create job and removed by its delete job (through the VM "
               "actions). Data disks (with an owner) are added, attached and detached by their users (a VM's Disks "
               "panel, the API, the CLI); a detached data disk can be deleted here. Everything else is read-only.")


@admin.register(Volume)
class VolumeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("name", "label", "owner_link", "shareable", "attached_to", "capacity", "format", "backing_image",
                    "copy_of", "host", "created")
    list_filter = (DataDiskFilter, "shareable", "pool__host", "format", ("owner", admin.RelatedOnlyFieldListFilter),
                   ("backing_image", admin.RelatedOnlyFieldListFilter),
                   ("copy_of", admin.RelatedOnlyFieldListFilter), "pool")
    search_fields = ("name", "label", "path", "owner__username", "attachments__vm__name", "attachments__vm__uuid")
    list_select_related = ("pool__host", "backing_image", "copy_of", "owner", "group")
    readonly_fields = ("name", "label", "owner_link", "group", "shareable", "attached_to", "pool", "path", "format",
                       "capacity", "backing_image", "copy_of", "created")
    fields = readonly_fields
    change_list_template = "admin/portal/change_list_note.html"
    actions = None

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attachments__vm")

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, note_context(VOLUME_NOTE, extra_context))

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, obj):
        """Data disks: whose quota it counts against (a team's: the group); boot disks and seeds: none."""
        return link(obj.owner) if obj.owner_id else EMPTY

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

    @admin.display(description="host copies")
    def host_copies(self, obj):
        """Its copies in other hosts' pools (storage.copies; made when a VM there needs them, read-only)."""
        copies = list(obj.host_copies.select_related("pool__host").order_by("pool__host__name"))
        if not copies:
            return "None: VMs on other hosts get a copy when they are created there."
        return format_html_join(
            "", "<div>{}: {} ({}){}</div>",
            ((c.pool.host.name, c.path or c.volume_name, human_bytes(c.size_bytes) if c.path else "being copied",
              f"; kernel {c.kernel_path}, initrd {c.initrd_path}" if c.kernel_path else "") for c in copies))

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

"""Glance in the back-office (thin: clouds.glance holds the rules).

- `GlanceCloudAdminMixin` for the Cloud admin: a page per cloud listing its Glance images (formats, sizes,
  checksums, visibility, what each was imported as) with an Import form per image (portal name, storage
  domain, visibility), and a "Glance images" link column (`glance_link`).
- `publish_to_glance`, an action on storage Images (registered through storage.admin's action registry):
  asks for the cloud, the Glance name and visibility, then queues one publication job per image.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from portal.admin_helpers import ReadOnlyAdminMixin, link, when
from portal.choices import Via
from portal.exceptions import PortalError, admin_message
from storage.admin import register_image_admin_action
from storage.models import Image, StoragePool

from . import glance
from .models import Cloud, GlanceImport, GlancePublication


class GlanceCloudAdminMixin:
    """Mixed into the Cloud ModelAdmin: the Glance images page of each cloud."""

    admin_site: Any
    model: Any

    def get_urls(self) -> list:
        own = [path("<path:object_id>/glance/", self.admin_site.admin_view(self.glance_images_view),
                    name="clouds_cloud_glance")]
        return own + super().get_urls()  # type: ignore[misc]

    @admin.display(description="Glance images")
    def glance_link(self, obj: Cloud) -> str:
        return format_html('<a href="{}">Glance images</a>', reverse("admin:clouds_cloud_glance", args=[obj.pk]))

    def glance_images_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        cloud = Cloud.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        if cloud is None:
            messages.error(request, "No such cloud.")
            return HttpResponseRedirect(reverse("admin:clouds_cloud_changelist"))
        here = reverse("admin:clouds_cloud_glance", args=[cloud.pk])
        if request.method == "POST":
            try:
                result = glance.glance_import(
                    actor=request.user, via=Via.ADMIN, cloud=cloud, glance_id=request.POST.get("glance_id", ""),
                    name=request.POST.get("name") or None, storage_domain=request.POST.get("storage_domain") or None,
                    visibility=request.POST.get("visibility") or None)
            except PortalError as exc:
                messages.error(request, admin_message(exc))
            else:
                if result.image is not None:
                    where = result.image.pool.name if result.image.pool_id else ""
                    messages.info(request, format_html(
                        "Already imported as image {}{} (re-imports are idempotent; to have it elsewhere, "
                        "copy the portal image).", link(result.image, result.image.name),
                        f" in storage domain {where}" if where else ""))
                elif result.job is not None:
                    verb = "Import queued" if result.created else "An import of this image is running already"
                    messages.success(request, format_html("{}: {}.", verb, link(result.job, f"job {result.job.pk}")))
            return HttpResponseRedirect(here)
        rows: list[dict[str, Any]] = []
        error = ""
        try:
            rows = glance.glance_images(actor=request.user, cloud=cloud)
        except PortalError as exc:
            error = admin_message(exc)
        domains = sorted(set(StoragePool.objects.filter(content=StoragePool.Content.DATA)
                             .values_list("name", flat=True)))
        context = {**self.admin_site.each_context(request), "title": f"Glance images of cloud {cloud.name}",
                   "subtitle": None, "opts": self.model._meta, "cloud": cloud, "rows": rows, "error": error,
                   "domains": domains, "visibilities": Image.Visibility.choices}
        return TemplateResponse(request, "admin/clouds/glance_images.html", context)


@admin.action(description="Publish to Glance")
def publish_to_glance(modeladmin: Any, request: HttpRequest, queryset: Any) -> HttpResponse | None:
    images = list(queryset)
    clouds = list(Cloud.objects.all())
    if request.POST.get("post") == "yes":
        cloud = next((c for c in clouds if str(c.pk) == request.POST.get("cloud")), None)
        if cloud is None:
            modeladmin.message_user(request, "Choose a cloud.", messages.ERROR)
            return None
        for image in images:
            name = (request.POST.get("name") or "").strip() if len(images) == 1 else ""
            try:
                job = glance.glance_publish(actor=request.user, via=Via.ADMIN, cloud=cloud, image=image,
                                            name=name or None, visibility=request.POST.get("visibility") or "private")
            except PortalError as exc:
                modeladmin.message_user(request, f"{image.name}: {admin_message(exc)}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"Publishing {image.name} to {cloud.name} (job {job.pk}).")
        return None
    context = {**modeladmin.admin_site.each_context(request), "title": "Publish to Glance", "subtitle": None,
               "opts": modeladmin.model._meta, "images": images, "clouds": clouds,
               "visibilities": glance.GLANCE_VISIBILITY, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
    return TemplateResponse(request, "admin/clouds/glance_publish.html", context)


def register() -> None:
    """Called from clouds.apps: the Images admin offers Publish to Glance."""
    register_image_admin_action(publish_to_glance)


@admin.register(GlanceImport)
class GlanceImportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What came from Glance: which Glance image became which portal image, by which job."""

    list_display = ("glance_name", "cloud", "glance_id", "image_link", "job_link", "created")
    list_filter = ("cloud",)
    search_fields = ("glance_name", "glance_id", "image__name")
    list_select_related = ("cloud", "image", "job")

    @admin.display(description="portal image")
    def image_link(self, obj: GlanceImport) -> Any:
        return link(obj.image, obj.image.name if obj.image else None)

    @admin.display(description="job")
    def job_link(self, obj: GlanceImport) -> Any:
        return link(obj.job, f"job {obj.job_id}" if obj.job_id else None)

    @admin.display(description="imported", ordering="created_at")
    def created(self, obj: GlanceImport) -> Any:
        return when(obj.created_at)


@admin.register(GlancePublication)
class GlancePublicationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What went to Glance: each publication, its Glance id and how it ended."""

    list_display = ("image_name", "cloud", "status", "glance_id", "job_link", "created")
    list_filter = ("cloud", "status")
    search_fields = ("image_name", "glance_id")
    list_select_related = ("cloud", "job")

    @admin.display(description="job")
    def job_link(self, obj: GlancePublication) -> Any:
        return link(obj.job, f"job {obj.job_id}" if obj.job_id else None)

    @admin.display(description="published", ordering="created_at")
    def created(self, obj: GlancePublication) -> Any:
        return when(obj.created_at)

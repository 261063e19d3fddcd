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

from portal.choices import Via
from portal.exceptions import PortalError, admin_message
from storage.models import Image, StoragePool

from . import glance
from .models import Cloud


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
                    messages.info(request, f"Already imported as image {result.image.name}.")
                elif result.created:
                    messages.success(request, f"Import queued (job {result.job.pk if result.job else ''}).")
                else:
                    messages.info(request, "An import of this image is running already.")
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
    from storage.admin import register_image_admin_action

    register_image_admin_action(publish_to_glance)

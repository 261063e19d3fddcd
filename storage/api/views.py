"""Images API: the library as you may see it, your own images changed and deleted, imports as jobs."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import INVALID, NAME_OR_ID, NOT_FOUND, CatalogViewSet, ErrorSerializer, QuotaErrorSerializer
from portal.choices import Via
from storage.imports import image_import
from storage.models import Image
from storage.selectors import image_get, image_list
from storage.services import image_delete, image_update

from .serializers import (
    ImageImportResultSerializer,
    ImageImportSerializer,
    ImageSerializer,
    ImageUpdateSerializer,
)

FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Not yours to change (library images: administrators).")


@extend_schema_view(list=extend_schema(description="Images you may use: public ones, your own, your groups'."))
class ImageViewSet(CatalogViewSet):
    """Images VMs boot from: the library, your own, and those shared with your groups (staff: all)."""

    serializer_class = ImageSerializer
    queryset = Image.objects.none()
    action_serializers = {"partial_update": ImageUpdateSerializer, "import_image": ImageImportSerializer}

    def get_serializer_class(self):
        return self.action_serializers.get(self.action, ImageSerializer)

    def visible(self, request: Request) -> QuerySet[Image]:
        return image_list(user=request.user).prefetch_related("groups")

    def find(self, request: Request, key: str) -> Image:
        return image_get(user=request.user, name_or_id=key)

    @extend_schema(parameters=[NAME_OR_ID], request=ImageUpdateSerializer,
                   responses={200: ImageSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """Change an image's title, description, OS, visibility and groups (yours; staff: any)."""
        data = ImageUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = image_update(actor=request.user, via=Via.API, image=self.find(request, str(pk)), **data.validated_data)
        return Response(ImageSerializer(image).data)

    @extend_schema(parameters=[NAME_OR_ID], request=None,
                   responses={204: OpenApiResponse(description="Deleted with its stored file."), 403: FORBIDDEN,
                              404: NOT_FOUND,
                              409: OpenApiResponse(ErrorSerializer, description="In use by VMs or disks.")})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete an image (yours; staff: any) and its stored file; refused while VMs use it."""
        image_delete(actor=request.user, via=Via.API, image=self.find(request, str(pk)))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=ImageImportSerializer,
        responses={202: OpenApiResponse(ImageImportResultSerializer, description="Accepted: the job imports it."),
                   400: INVALID,
                   403: OpenApiResponse(QuotaErrorSerializer, description="Beyond your disk quota, or not allowed."),
                   409: OpenApiResponse(ErrorSerializer, description="No host to store it on, or IMAGE_IMPORTS_PER_USER imports of yours running."),
                   413: OpenApiResponse(ErrorSerializer, description="Larger than the portal accepts.")})
    @action(detail=False, methods=["post"], url_path="import", url_name="import")
    def import_image(self, request: Request) -> Response:
        """Import an image from a finished upload, a URL or (staff) a file on the portal server: a job detects
        and checks the format, converts it to qcow2 (ISOs stay as they are) and stores it. Answers 202."""
        data = ImageImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        job = image_import(
            actor=request.user, via=Via.API, source=v["source"], upload=v.get("upload"), url=v.get("url"),
            path=v.get("path"), sha256=v.get("sha256") or None, name=v["name"], title=v.get("title", ""),
            fmt=v.get("format"), kind=v.get("kind"), visibility=v.get("visibility"), groups=v.get("groups", []),
            owner=v.get("owner"), description=v.get("description", ""), os_name=v.get("os_name", ""),
            cloud_init=v["cloud_init"], login_user=v["login_user"], min_disk_gib=v["min_disk_gib"])
        body = ImageImportResultSerializer(
            {"message": f"Importing image {v['name']}; follow the job for its progress.", "job": job},
            context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["job"]["url"]})

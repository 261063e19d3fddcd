"""Glance doors of the REST API (thin: clouds.glance holds the rules).

GET  /api/clouds/{cloud}/glance/images/                       the cloud's Glance images and their properties
POST /api/clouds/{cloud}/glance/images/{glance_id}/import/    202 with the import job; 200 with the image on re-import
POST /api/clouds/{cloud}/glance/publish/                      {image, name, visibility} → 202 with the publish job
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clouds import glance
from portal.api import INVALID, NOT_FOUND, ErrorSerializer
from portal.choices import Via
from portal.jobs.api.serializers import JobSummarySerializer
from storage.api.serializers import ImageSerializer
from storage.models import Image
from storage.selectors import image_get


class GlanceImportSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=60)
    title = serializers.CharField(required=False, allow_blank=True, max_length=100)
    storage_domain = serializers.CharField(required=False, allow_blank=True, max_length=100)
    visibility = serializers.ChoiceField(choices=Image.Visibility.values, required=False)
    kind = serializers.ChoiceField(choices=Image.Kind.values, required=False)


class GlancePublishSerializer(serializers.Serializer):
    image = serializers.CharField(help_text="The portal image or template (name or id).")
    name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    visibility = serializers.ChoiceField(choices=glance.GLANCE_VISIBILITY, default="private")


FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Administrators only.")
CLOUD = OpenApiParameter("cloud", str, OpenApiParameter.PATH, description="The cloud's numeric id or its name.")
GLANCE_ID = OpenApiParameter("glance_id", str, OpenApiParameter.PATH, description="The Glance image's id.")


class GlanceImageSerializer(serializers.Serializer):
    """One Glance image as the portal sees it (read only)."""

    id = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    disk_format = serializers.CharField()
    container_format = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    virtual_size = serializers.IntegerField(allow_null=True)
    checksum = serializers.CharField(help_text="Glance's MD5.")
    os_hash_algo = serializers.CharField()
    os_hash_value = serializers.CharField(help_text="What the imported bytes are checked against.")
    visibility = serializers.CharField()
    min_disk = serializers.IntegerField(help_text="GiB.")
    min_ram = serializers.IntegerField(help_text="MiB.")
    os_type = serializers.CharField()
    os_distro = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    importable = serializers.BooleanField()
    refused_because = serializers.CharField(help_text="Why the portal would refuse it (empty when importable).")
    imported_as = inline_serializer("GlanceImportedAs", {"id": serializers.IntegerField(),
                                                         "name": serializers.CharField()}, allow_null=True)


GlanceImagesResponse = inline_serializer("GlanceImages", {"cloud": serializers.CharField(),
                                                          "images": GlanceImageSerializer(many=True)})
JobAccepted = inline_serializer("GlanceJobAccepted", {"message": serializers.CharField(),
                                                      "job": JobSummarySerializer()})
AlreadyImported = inline_serializer("GlanceAlreadyImported", {"message": serializers.CharField(),
                                                              "image": ImageSerializer()})


def _job(request: Request, job: Any, message: str) -> Response:
    body = {"message": message, "job": JobSummarySerializer(job, context={"request": request}).data}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["job"]["url"]})


class GlanceImagesView(APIView):
    @extend_schema(parameters=[CLOUD], responses={200: GlanceImagesResponse, 403: FORBIDDEN, 404: NOT_FOUND,
                                                  409: OpenApiResponse(ErrorSerializer, description="The cloud "
                                                                       "could not be reached.")})
    def get(self, request: Request, cloud: str) -> Response:
        """The cloud's Glance images: formats, sizes, checksums, visibility, and the portal image each became."""
        row = glance.cloud_find(actor=request.user, key=cloud)
        return Response({"cloud": row.name, "images": glance.glance_images(actor=request.user, cloud=row)})


class GlanceImportView(APIView):
    @extend_schema(parameters=[CLOUD, GLANCE_ID], request=GlanceImportSerializer,
                   responses={202: JobAccepted, 200: AlreadyImported, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    def post(self, request: Request, cloud: str, glance_id: str) -> Response:
        """Import a Glance image: 202 with the job; 200 with the portal image when it was imported already
        (or 202 with the job still importing it)."""
        row = glance.cloud_find(actor=request.user, key=cloud)
        data = GlanceImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        result = glance.glance_import(actor=request.user, via=Via.API, cloud=row, glance_id=glance_id,
                                      name=v.get("name") or None, title=v.get("title", ""),
                                      storage_domain=v.get("storage_domain") or None,
                                      visibility=v.get("visibility"), kind=v.get("kind"))
        if result.image is not None:
            return Response({"message": f"Glance image {glance_id} was imported already as {result.image.name}.",
                             "image": ImageSerializer(result.image, context={"request": request}).data},
                            status=status.HTTP_200_OK)
        assert result.job is not None
        word = "Importing" if result.created else "Already importing"
        return _job(request, result.job, f"{word} Glance image {glance_id}; follow the job for its progress.")


class GlancePublishView(APIView):
    @extend_schema(parameters=[CLOUD], request=GlancePublishSerializer,
                   responses={202: JobAccepted, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    def post(self, request: Request, cloud: str) -> Response:
        """Publish a portal image or template to the cloud's Glance: 202 with the job."""
        row = glance.cloud_find(actor=request.user, key=cloud)
        data = GlancePublishSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        image = image_get(user=request.user, name_or_id=v["image"])
        job = glance.glance_publish(actor=request.user, via=Via.API, cloud=row, image=image,
                                    name=v.get("name") or None, visibility=v["visibility"])
        return _job(request, job, f"Publishing image {image.name} to cloud {row.name}; follow the job.")

"""Resumable uploads over the tus 1.0.0 protocol (core, creation, termination, expiration) at /api/uploads/.

    OPTIONS /api/uploads/          discovery: Tus-Version, Tus-Extension, Tus-Max-Size
    POST    /api/uploads/          creation: Upload-Length, Upload-Metadata (base64 pairs; `filename`) -> 201 + Location
    HEAD    /api/uploads/{id}/     Upload-Offset and Upload-Length, to resume after a dropped connection
    PATCH   /api/uploads/{id}/     Content-Type: application/offset+octet-stream, Upload-Offset: the current
                                   offset exactly (409 otherwise) -> 204 + the new Upload-Offset
    DELETE  /api/uploads/{id}/     termination: cancel and remove the bytes
    GET     /api/uploads/, /api/uploads/{id}/   the portal's own JSON view of your uploads

Every rule is in storage.uploads; this module only speaks the protocol. A PATCH body is read from the
request stream in pieces (storage.uploads.upload_append), never through `request.data`/`request.body`, so
no chunk is held in memory and Django's DATA_UPLOAD_MAX_MEMORY_SIZE does not apply to it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api import INVALID, NOT_FOUND, ErrorSerializer, QuotaErrorSerializer, row_url
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed
from storage import uploads
from storage.models import Upload

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,expiration"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"


class TusProtocolError(PortalError):
    """A request that does not speak tus 1.0.0 as this server does (412, 415)."""

    code = "tus_protocol"


class TusVersionMismatch(TusProtocolError):
    code = "tus_version"
    http_status = 412


class TusContentType(TusProtocolError):
    code = "unsupported_media_type"
    http_status = 415


def parse_metadata(header: str) -> dict[str, str]:
    """`Upload-Metadata: key b64value,key2 b64value2,flag` as a dict (a key without value maps to "")."""
    result: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        if not key or key in result or " " in value.strip():
            raise ValidationFailed("Upload-Metadata must be comma-separated `key base64value` pairs with "
                                   "unique keys.", field="metadata")
        try:
            result[key] = base64.b64decode(value.strip(), validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise ValidationFailed(f"Upload-Metadata value of {key[:40]!r} is not base64 of UTF-8 text.",
                                   field="metadata") from None
    return result


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in metadata.items())


class UploadSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Upload
        fields = ["id", "filename", "length", "offset", "status", "metadata", "created_at", "updated_at",
                  "expires_at", "url"]
        read_only_fields = fields

    def get_url(self, upload: Upload) -> str:
        return row_url(self.context, "api-upload-detail", pk=str(upload.pk))


class _TusPermission(permissions.IsAuthenticated):
    """Signed in for everything but OPTIONS (the protocol's discovery, which reveals nothing)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method == "OPTIONS" or super().has_permission(request, view)


def _header(request: Request, name: str) -> str | None:
    return request.headers.get(name)


class _TusView(APIView):
    permission_classes = [_TusPermission]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "HEAD", "PATCH", "DELETE") and _header(request, "Tus-Resumable") != TUS_VERSION:
            raise TusVersionMismatch(f"This server speaks tus {TUS_VERSION}: send `Tus-Resumable: {TUS_VERSION}`.")

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Tus-Resumable"] = TUS_VERSION
        if response.status_code == 412:
            response["Tus-Version"] = TUS_VERSION
        return response

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(status=status.HTTP_204_NO_CONTENT, headers={
            "Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(settings.IMAGE_MAX_BYTES)})


def _state_headers(upload: Upload) -> dict[str, str]:
    return {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length),
            "Upload-Expires": upload.expires_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Cache-Control": "no-store"}


TUS_RESUMABLE = OpenApiParameter("Tus-Resumable", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                 description="Always `1.0.0`.")
UPLOAD_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The upload's id.")


class UploadListView(_TusView):
    """Your resumable uploads (tus 1.0.0): announce one here, then PATCH its bytes to its URL."""

    @extend_schema(responses={200: UploadSerializer(many=True)}, tags=["uploads"])
    def get(self, request: Request) -> Response:
        """Your uploads, newest first (each user sees only their own)."""
        rows = uploads.upload_list(user=request.user)[:200]
        return Response(UploadSerializer(rows, many=True, context={"request": request}).data)

    @extend_schema(
        request=None, tags=["uploads"],
        parameters=[TUS_RESUMABLE,
                    OpenApiParameter("Upload-Length", OpenApiTypes.INT, OpenApiParameter.HEADER, required=True,
                                     description="Size of the whole file in bytes."),
                    OpenApiParameter("Upload-Metadata", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                     description="Comma-separated `key base64(value)` pairs, e.g. `filename ZGViaWFuLnFjb3cy`.")],
        responses={201: OpenApiResponse(UploadSerializer, description="Created; `Location` is its URL."),
                   400: INVALID, 403: OpenApiResponse(QuotaErrorSerializer, description="Beyond your disk quota "
                                                      "(counting your other open uploads)."),
                   409: OpenApiResponse(ErrorSerializer, description="You have UPLOADS_PER_USER uploads open."),
                   412: OpenApiResponse(ErrorSerializer, description="Not tus 1.0.0."),
                   413: OpenApiResponse(ErrorSerializer, description="Larger than the portal accepts.")})
    def post(self, request: Request) -> Response:
        """Announce an upload (tus creation)."""
        if _header(request, "Upload-Defer-Length"):
            raise ValidationFailed("Upload-Defer-Length is not supported: send Upload-Length.", field="length")
        length = _header(request, "Upload-Length")
        if length is None:
            raise ValidationFailed("Upload-Length is required.", field="length")
        metadata = parse_metadata(_header(request, "Upload-Metadata") or "")
        upload = uploads.upload_create(actor=request.user, via=Via.API, length=length, metadata=metadata)
        body = UploadSerializer(upload, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED,
                        headers={"Location": body["url"], **_state_headers(upload)})


class UploadDetailView(_TusView):
    """One upload: its offset (HEAD), its next bytes (PATCH), cancel (DELETE)."""

    def _get(self, request: Request, pk: Any) -> Upload:
        return uploads.upload_get(user=request.user, upload_id=pk)

    @extend_schema(parameters=[UPLOAD_ID], responses={200: UploadSerializer, 404: NOT_FOUND}, tags=["uploads"])
    def get(self, request: Request, pk: Any) -> Response:
        """The upload as JSON: bytes received, status."""
        upload = self._get(request, pk)
        return Response(UploadSerializer(upload, context={"request": request}).data, headers=_state_headers(upload))

    def head(self, request: Request, pk: Any) -> Response:
        """The bytes received so far (`Upload-Offset`), to resume from (tus core)."""
        upload = self._get(request, pk)
        headers = _state_headers(upload)
        if upload.metadata:
            headers["Upload-Metadata"] = encode_metadata(upload.metadata)
        return Response(status=status.HTTP_200_OK, headers=headers)

    @extend_schema(
        parameters=[UPLOAD_ID, TUS_RESUMABLE,
                    OpenApiParameter("Upload-Offset", OpenApiTypes.INT, OpenApiParameter.HEADER, required=True,
                                     description="The bytes received so far (from HEAD), exactly.")],
        request={OFFSET_CONTENT_TYPE: OpenApiTypes.BINARY}, tags=["uploads"],
        responses={204: OpenApiResponse(description="Appended; `Upload-Offset` is the new offset."),
                   400: INVALID, 404: NOT_FOUND,
                   409: OpenApiResponse(ErrorSerializer, description="Offset mismatch, or another request is writing."),
                   412: OpenApiResponse(ErrorSerializer, description="Not tus 1.0.0."),
                   413: OpenApiResponse(ErrorSerializer, description="More bytes than announced."),
                   415: OpenApiResponse(ErrorSerializer, description="Wrong Content-Type.")})
    def patch(self, request: Request, pk: Any) -> Response:
        """Append bytes at the current offset (tus core)."""
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if content_type != OFFSET_CONTENT_TYPE:
            raise TusContentType(f"Send the bytes with Content-Type: {OFFSET_CONTENT_TYPE}.")
        offset = _header(request, "Upload-Offset")
        if offset is None:
            raise ValidationFailed("Upload-Offset is required.", field="offset")
        upload = self._get(request, pk)
        raw_length = request.META.get("CONTENT_LENGTH") or ""
        length = int(raw_length) if raw_length.isascii() and raw_length.isdigit() else None
        # The Django request itself is the body stream (WSGI: limited to Content-Length; ASGI: the spooled
        # body), read in pieces; request.data would parse, and request.body would load it into memory.
        upload = uploads.upload_append(actor=request.user, upload=upload, offset=offset,
                                       stream=request._request, content_length=length)
        return Response(status=status.HTTP_204_NO_CONTENT, headers=_state_headers(upload))

    @extend_schema(parameters=[UPLOAD_ID, TUS_RESUMABLE], request=None, tags=["uploads"],
                   responses={204: OpenApiResponse(description="Cancelled; its bytes are removed."),
                              404: NOT_FOUND, 409: OpenApiResponse(ErrorSerializer, description="Being imported.")})
    def delete(self, request: Request, pk: Any) -> Response:
        """Cancel the upload and remove its bytes (tus termination)."""
        uploads.upload_cancel(actor=request.user, via=Via.API, upload=self._get(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

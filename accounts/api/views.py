"""SSH keys API: your keys, add one, look one up, delete it; rules in accounts.services.

Other users' keys are 404, exactly like missing ones (administrators may read and delete any by id).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import SSHKey
from accounts.selectors import sshkey_get, sshkey_list
from accounts.services import sshkey_add, sshkey_delete
from portal.api import INVALID, NOT_FOUND, ErrorSerializer, Pagination
from portal.choices import Via

from .serializers import SSHKeyCreateSerializer, SSHKeySerializer

KEY_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The key's numeric id.")


class SSHKeyViewSet(viewsets.GenericViewSet):
    """Your SSH public keys: cloud-init puts them into the VMs you create."""

    serializer_class = SSHKeySerializer
    pagination_class = Pagination
    filter_backends: list = []
    queryset = SSHKey.objects.none()  # for schema introspection; reads go through accounts.selectors

    def get_serializer_class(self):
        return SSHKeyCreateSerializer if self.action == "create" else SSHKeySerializer

    @extend_schema(responses={200: SSHKeySerializer(many=True)})
    def list(self, request: Request) -> Response:
        """Your keys, oldest first."""
        page = self.paginate_queryset(sshkey_list(request.user))
        return self.get_paginated_response(SSHKeySerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        request=SSHKeyCreateSerializer,
        responses={201: SSHKeySerializer, 400: INVALID,
                   409: OpenApiResponse(ErrorSerializer, description="You have the most keys allowed.")},
    )
    def create(self, request: Request) -> Response:
        """Add a public key (ED25519, ECDSA, or RSA of 2048 bits or more) as one line of a .pub file."""
        data = SSHKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = sshkey_add(actor=request.user, via=Via.API, public_key=data.validated_data["public_key"],
                         name=data.validated_data.get("name") or "")
        body = SSHKeySerializer(key, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @extend_schema(parameters=[KEY_ID], responses={200: SSHKeySerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """One of your keys."""
        return Response(SSHKeySerializer(sshkey_get(request.user, pk), context={"request": request}).data)

    @extend_schema(parameters=[KEY_ID], request=None, responses={204: None, 404: NOT_FOUND})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete the key. VMs created before keep it in their authorized_keys."""
        sshkey_delete(actor=request.user, via=Via.API, key=sshkey_get(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

"""Images API: the library VMs boot from (staff also see non-public images)."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.request import Request

from portal.api import CatalogViewSet
from storage.models import Image
from storage.selectors import image_get, image_list

from .serializers import ImageSerializer


class ImageViewSet(CatalogViewSet):
    """Images VMs boot from (staff also see non-public ones)."""

    serializer_class = ImageSerializer
    queryset = Image.objects.none()

    def visible(self, request: Request) -> QuerySet[Image]:
        return image_list(user=request.user)

    def find(self, request: Request, key: str) -> Image:
        return image_get(user=request.user, name_or_id=key)

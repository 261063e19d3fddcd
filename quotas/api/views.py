"""Quota API: your usage, personal and per group."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from quotas.selectors import quota_usage

from .serializers import QuotaOverviewSerializer


class QuotaView(APIView):
    """Your quota usage: personal (VMs without a group) and that of each group you belong to."""

    @extend_schema(responses={200: QuotaOverviewSerializer})
    def get(self, request: Request) -> Response:
        user = request.user
        body = {
            "user": {"subject": "user", "name": user.get_username(), "resources": quota_usage(user=user)},
            "groups": [{"subject": "group", "name": g.name, "resources": quota_usage(group=g)}
                       for g in user.groups.order_by("name")],
            "vm_limits": {k: list(v) for k, v in settings.VM_LIMITS.items()},
        }
        return Response(QuotaOverviewSerializer(body).data)

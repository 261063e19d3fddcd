"""Jobs API: read-only for users and plugins (work is started through the objects' own endpoints)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import INVALID, NOT_FOUND, Pagination
from portal.jobs.selectors import job_get, job_visible, with_children_count
from portal.models import Job

from .serializers import JobListQuerySerializer, JobSerializer


class JobViewSet(viewsets.GenericViewSet):
    """Jobs you started or that act on what you can see (staff: all)."""

    serializer_class = JobSerializer
    pagination_class = Pagination
    filter_backends: list = []
    queryset = Job.objects.none()
    lookup_value_regex = "[^/]+"

    def get_cursor_ordering(self) -> tuple[str, ...] | None:
        """The job list offers `?pagination=cursor` (portal.api.Pagination), newest first."""
        return ("-created_at", "id") if self.action == "list" else None

    @extend_schema(parameters=[JobListQuerySerializer], responses={200: JobSerializer(many=True), 400: INVALID})
    def list(self, request: Request) -> Response:
        """Jobs, newest first; filter by status or kind. `?pagination=cursor`: cursor pages (no count)."""
        query = JobListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = with_children_count(job_visible(user=request.user))
        if query.validated_data.get("status"):
            qs = qs.filter(status=query.validated_data["status"])
        if query.validated_data.get("kind"):
            qs = qs.filter(kind=query.validated_data["kind"])
        if query.validated_data.get("parent"):
            qs = qs.filter(parent_id=query.validated_data["parent"])
        page = self.paginate_queryset(qs.order_by("-created_at"))
        return self.get_paginated_response(JobSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
                   responses={200: JobSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """One job: status, progress, log, result or error (traceback for staff)."""
        job = job_get(user=request.user, job_id=pk)
        job.children_count = job.children.count()  # type: ignore[attr-defined]  # as the list annotates
        return Response(JobSerializer(job, context={"request": request}).data)

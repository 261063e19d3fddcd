"""Jobs API: users read jobs and cancel them; plugins (their own door, `Authorization: Plugin <token>`)
create and report on external jobs under /api/jobs/external/ and nothing else."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import INVALID, NOT_FOUND, ErrorSerializer, Pagination
from portal.choices import Via
from portal.jobs.selectors import job_get, job_visible, with_children_count
from portal.jobs.services import (
    external_job_create,
    external_job_finish,
    external_job_get,
    external_job_list,
    external_job_report,
    job_cancel,
)
from portal.models import Job, PluginToken

from .authentication import IsPlugin, PluginTokenAuthentication
from .serializers import (
    ExternalJobCreateSerializer,
    ExternalJobFinishSerializer,
    ExternalJobReportSerializer,
    ExternalJobSerializer,
    JobListQuerySerializer,
    JobSerializer,
)

JOB_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)
CONFLICT = OpenApiResponse(ErrorSerializer, description="The job has ended, or cannot be cancelled (why in detail).")


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

    @extend_schema(parameters=[JOB_ID], request=None, responses={200: JobSerializer, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a job: an external job created cancellable is asked to stop (`cancel_requested`; its plugin
        finishes it as cancelled); a pending job of a kind that allows it is cancelled at once; else 409."""
        job = job_cancel(actor=request.user, via=Via.API, job_id=pk)
        return Response(JobSerializer(job_get(user=request.user, job_id=job.pk), context={"request": request}).data)


def _plugin(request: Request) -> PluginToken:
    """The plugin the request authenticated as (IsPlugin let only plugin tokens in)."""
    assert isinstance(request.auth, PluginToken)
    return request.auth


class ExternalJobViewSet(viewsets.GenericViewSet):
    """External-plugin jobs: only with a plugin token (`Authorization: Plugin <token>`), only the plugin's own."""

    authentication_classes = [PluginTokenAuthentication]
    permission_classes = [IsPlugin]
    serializer_class = ExternalJobSerializer
    pagination_class = Pagination
    filter_backends: list = []
    queryset = Job.objects.none()
    lookup_value_regex = "[^/]+"

    def _answer(self, request: Request, job: Job, status: int = 200) -> Response:
        return Response(ExternalJobSerializer(job, context={"request": request}).data, status=status)

    @extend_schema(responses={200: ExternalJobSerializer(many=True)})
    def list(self, request: Request) -> Response:
        """The plugin's own jobs, newest first."""
        page = self.paginate_queryset(external_job_list(plugin=_plugin(request)))
        return self.get_paginated_response(ExternalJobSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request=ExternalJobCreateSerializer, responses={201: ExternalJobSerializer, 400: INVALID})
    def create(self, request: Request) -> Response:
        """Start a job on a VM or host within the plugin's scope: it is running at once."""
        body = ExternalJobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = external_job_create(plugin=_plugin(request), **body.validated_data)
        return self._answer(request, job, status=201)

    @extend_schema(parameters=[JOB_ID], responses={200: ExternalJobSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """One of the plugin's jobs, with `cancel_requested`."""
        return self._answer(request, external_job_get(plugin=_plugin(request), job_id=pk))

    @extend_schema(parameters=[JOB_ID], request=ExternalJobReportSerializer,
                   responses={200: ExternalJobSerializer, 400: INVALID, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def progress(self, request: Request, pk: str | None = None) -> Response:
        """Report progress (0-100), the current step and log lines."""
        body = ExternalJobReportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._answer(request, external_job_report(plugin=_plugin(request), job_id=pk, **body.validated_data))

    @extend_schema(parameters=[JOB_ID], request=ExternalJobFinishSerializer,
                   responses={200: ExternalJobSerializer, 400: INVALID, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def finish(self, request: Request, pk: str | None = None) -> Response:
        """End the job: `status` succeeded (default), failed (with `error`) or cancelled."""
        body = ExternalJobFinishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._answer(request, external_job_finish(plugin=_plugin(request), job_id=pk, **body.validated_data))

    @extend_schema(parameters=[JOB_ID], request=ExternalJobFinishSerializer,
                   responses={200: ExternalJobSerializer, 400: INVALID, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def fail(self, request: Request, pk: str | None = None) -> Response:
        """End the job as failed, with `error` (plain words the VM's owner reads)."""
        body = ExternalJobFinishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = {**body.validated_data, "status": "failed"}
        return self._answer(request, external_job_finish(plugin=_plugin(request), job_id=pk, **data))

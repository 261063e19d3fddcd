"""Backups over REST: what an external backup tool needs (start, follow, list, pull over NBD, finish,
restore, delete, schedules). Parse with a serializer, call one backups service or selector, render;
other users' backups and VMs are 404, exactly like missing ones (backups.selectors decides)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backups import selectors, services
from backups.models import BackupSchedule
from portal.api import INVALID, NOT_FOUND, ErrorSerializer, Pagination, QuotaErrorSerializer
from portal.choices import Via
from portal.exceptions import NotFound, ValidationFailed
from vms.selectors import vm_get

from .serializers import (
    BackupCreateSerializer,
    BackupListQuerySerializer,
    BackupOperationSerializer,
    BackupRestoreSerializer,
    BackupScheduleInputSerializer,
    BackupScheduleSerializer,
    BackupSerializer,
    RestoreOperationSerializer,
)

BACKUP_ID = OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                             description="The backup's numeric id or its UUID.")
VM_ID = OpenApiParameter("vm_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                         description="The VM's numeric id or its UUID.")
WRONG_STATE = OpenApiResponse(ErrorSerializer, description="The backup's or the VM's state does not allow it.")


def backup_operation(request: Request, result: tuple, *, created: bool = False) -> Response:
    """202 with the job when work was queued, 200 when nothing was left to do (no job)."""
    backup, job, message = result
    body = BackupOperationSerializer({"message": message, "backup": backup, "job": job},
                                     context={"request": request}).data
    if job is None:
        return Response(body, status=status.HTTP_200_OK)
    headers = {"Location": body["backup"]["url"]} if created else {}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


class BackupViewSet(viewsets.GenericViewSet):
    """Backups you may see: of your VMs and your groups' (also of deleted VMs); staff: all of them."""

    serializer_class = BackupSerializer
    pagination_class = Pagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"
    action_serializers = {"restore": BackupRestoreSerializer}

    def get_serializer_class(self):
        return self.action_serializers.get(self.action, BackupSerializer)

    def get_queryset(self):  # for schema introspection; reads go through backups.selectors
        return selectors.backups_visible(self.request.user)

    def get_object(self):
        return selectors.backup_get(actor=self.request.user, key=self.kwargs["pk"])

    @extend_schema(parameters=[BackupListQuerySerializer], responses={200: BackupSerializer(many=True), 400: INVALID})
    def list(self, request: Request) -> Response:
        """Backups you may see, newest first; `?vm=ID` for one VM's, `?status=`, `?kind=`."""
        query = BackupListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.backups_visible(request.user).select_related("owner", "group")
        wanted = query.validated_data
        if "vm" in wanted:
            if not (wanted["vm"].isascii() and wanted["vm"].isdigit() and len(wanted["vm"]) <= 18):
                raise ValidationFailed("vm: give the VM's numeric id.", field="vm")
            qs = qs.filter(vm_id=int(wanted["vm"]))
        if "status" in wanted:
            qs = qs.filter(status=wanted["status"])
        if "kind" in wanted:
            qs = qs.filter(kind=wanted["kind"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(BackupSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(parameters=[BACKUP_ID], responses={200: BackupSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """One backup: status, progress, size, its chain parent, its disks (no host paths), and in pull mode
        the NBD URI to read the disks from while it runs."""
        return Response(BackupSerializer(self.get_object(), context={"request": request}).data)

    @extend_schema(parameters=[BACKUP_ID], request=None,
                   responses={202: OpenApiResponse(BackupOperationSerializer, description="Accepted: the job "
                                                   "deletes its files."),
                              200: OpenApiResponse(BackupOperationSerializer, description="Deleted (nothing to run)."),
                              404: NOT_FOUND,
                              409: OpenApiResponse(ErrorSerializer, description="Running, or an incremental "
                                                   "backup depends on it.")})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete the backup and its files (refused while an incremental backup depends on it)."""
        return backup_operation(request, services.backup_delete(actor=request.user, via=Via.API,
                                                                backup=self.get_object()))

    @extend_schema(parameters=[BACKUP_ID], request=None,
                   responses={202: BackupOperationSerializer, 200: BackupOperationSerializer, 404: NOT_FOUND,
                              409: WRONG_STATE})
    @action(detail=True, methods=["post"], url_path="finish", url_name="finish")
    def finish(self, request: Request, pk: str | None = None) -> Response:
        """Pull mode: you have read what you need over NBD; the export ends (the checkpoint stays, so the next
        incremental backup starts there)."""
        return backup_operation(request, services.backup_finish(actor=request.user, via=Via.API,
                                                                backup=self.get_object()))

    @extend_schema(
        parameters=[BACKUP_ID], request=BackupRestoreSerializer,
        responses={202: OpenApiResponse(RestoreOperationSerializer, description="Accepted: the job restores it."),
                   400: INVALID, 403: OpenApiResponse(QuotaErrorSerializer, description="Quota exceeded."),
                   404: NOT_FOUND,
                   409: OpenApiResponse(ErrorSerializer, description="The chain is broken, the backup is not ready, "
                                        "or (in place) the VM is not stopped.")})
    @action(detail=True, methods=["post"], url_path="restore", url_name="restore")
    def restore(self, request: Request, pk: str | None = None) -> Response:
        """Restore the chain ending at this backup: to a new VM called `name`, or with `in_place: true` onto its
        stopped VM's disks (not both: 400). Pull backups have nothing stored here (409). Answers 202 with the VM
        and the job."""
        data = BackupRestoreSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        vm, job, message = services.backup_restore(
            actor=request.user, via=Via.API, backup=self.get_object(), name=data.validated_data.get("name") or None,
            in_place=data.validated_data["in_place"])
        body = RestoreOperationSerializer({"message": message, "vm": vm, "job": job},
                                          context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["vm"]["url"]})


class VMBackupsView(APIView):
    """A VM's backups (GET), and backing it up now (POST)."""

    pagination_class = Pagination
    serializer_class = BackupCreateSerializer  # the browsable API's form

    @extend_schema(parameters=[VM_ID], responses={200: BackupSerializer(many=True), 404: NOT_FOUND},
                   operation_id="vms_backups_list", tags=["backups"])
    def get(self, request: Request, vm_id: str) -> Response:
        """The VM's backups, newest first."""
        vm = vm_get(user=request.user, vm_id=vm_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.vm_backups(actor=request.user, vm=vm), request, view=self)
        return paginator.get_paginated_response(
            BackupSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        parameters=[VM_ID], request=BackupCreateSerializer, operation_id="vms_backups_create", tags=["backups"],
        responses={202: OpenApiResponse(BackupOperationSerializer, description="Accepted: the job backs it up; "
                                        "follow the backup's progress (or, in pull mode, read `nbd_uri`)."),
                   400: INVALID, 403: OpenApiResponse(QuotaErrorSerializer, description="Backup space quota exceeded."),
                   404: NOT_FOUND,
                   409: OpenApiResponse(ErrorSerializer, description="The VM is busy, in a state that cannot be "
                                        "backed up, or no backup storage domain is available.")})
    def post(self, request: Request, vm_id: str) -> Response:
        """Back the VM up: `kind` auto|full|incremental, `mode` push|pull, an optional `note`. Answers 202."""
        vm = vm_get(user=request.user, vm_id=vm_id)
        data = BackupCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return backup_operation(request, services.backup_create(
            actor=request.user, via=Via.API, vm=vm, kind=v["kind"], mode=v["mode"], note=v["note"]), created=True)


class VMBackupScheduleView(APIView):
    """A VM's backup schedule: read (GET), set (PUT), stop (DELETE; its backups stay)."""

    serializer_class = BackupScheduleInputSerializer

    def _schedule(self, request: Request, vm) -> BackupSchedule:
        found = BackupSchedule.objects.filter(vm=vm).first()
        if found is None:
            raise NotFound(f"{vm.name} has no backup schedule.")
        return found

    @extend_schema(parameters=[VM_ID], responses={200: BackupScheduleSerializer, 404: NOT_FOUND},
                   operation_id="vms_backup_schedule_retrieve", tags=["backups"])
    def get(self, request: Request, vm_id: str) -> Response:
        """The VM's backup schedule (404 when it has none)."""
        vm = vm_get(user=request.user, vm_id=vm_id)
        return Response(BackupScheduleSerializer(self._schedule(request, vm)).data)

    @extend_schema(parameters=[VM_ID], request=BackupScheduleInputSerializer,
                   responses={200: BackupScheduleSerializer, 400: INVALID, 404: NOT_FOUND},
                   operation_id="vms_backup_schedule_update", tags=["backups"])
    def put(self, request: Request, vm_id: str) -> Response:
        """Create or change the schedule: a backup every `interval_hours`, a full one then `incrementals`
        incremental ones, keeping the newest `keep_chains` chains. Fields left out keep their current values
        (a new schedule: enabled, 24 h, 6, 2); a changed interval moves `next_run_at` to the last run plus it."""
        vm = vm_get(user=request.user, vm_id=vm_id)
        data = BackupScheduleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        schedule = services.backup_schedule_set(actor=request.user, via=Via.API, vm=vm, **data.validated_data)
        return Response(BackupScheduleSerializer(schedule).data)

    @extend_schema(parameters=[VM_ID], request=None,
                   responses={204: OpenApiResponse(description="No schedule any more; the backups stay."),
                              404: NOT_FOUND},
                   operation_id="vms_backup_schedule_destroy", tags=["backups"])
    def delete(self, request: Request, vm_id: str) -> Response:
        """Stop backing the VM up on a schedule (its backups stay)."""
        vm = vm_get(user=request.user, vm_id=vm_id)
        services.backup_schedule_remove(actor=request.user, via=Via.API, vm=vm)
        return Response(status=status.HTTP_204_NO_CONTENT)

"""REST endpoints: parse with a serializer, call one service or selector, render.

Visibility comes from vms.selectors (other users' VMs are 404, exactly like missing ones) and every
rule from vms.services; domain errors become responses in portal.api.exception_handler.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Prefetch, QuerySet, prefetch_related_objects
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from cluster.models import ForeignDomain
from portal.actors import is_admin
from portal.api import (
    INVALID,
    NOT_FOUND,
    CatalogViewSet,
    ErrorSerializer,
    Pagination,
    QuotaErrorSerializer,
)
from portal.choices import Via
from portal.exceptions import ValidationFailed
from portal.jobs.api.serializers import JobSerializer
from portal.models import Job
from storage.models import Volume
from vms import disks as disk_services
from vms.adoption import foreign_domain_list, foreign_domain_lookup, vm_adopt, vm_delete_note, vm_release
from vms.bulk import vm_bulk_create
from vms.disk_doors import data_volume_get, data_volumes, size_field, vm_disk_get, vm_disks
from vms.leases import vm_lease_extend, vm_lease_set
from vms.migration import vm_migrate
from vms.models import VM, Flavor, VMDisk, VMNic
from vms.scheduling import SCHEDULING_FIELDS, vm_scheduling_update
from vms.selectors import (
    flavor_get,
    flavor_list,
    vm_audit_events,
    vm_get,
    vm_jobs,
    vm_list,
    vm_nic_get,
    vm_nics,
    vm_snapshot_get,
    vm_snapshots,
)
from vms.services import (
    VM_ACTIONS,
    ActionResult,
    snapshot_create,
    snapshot_delete,
    snapshot_revert,
    vm_action,
    vm_cdrom_eject,
    vm_cdrom_insert,
    vm_create,
    vm_delete,
    vm_grow_disk,
    vm_nic_add,
    vm_nic_remove,
    vm_nic_update,
    vm_template_create,
    vm_update,
)

from .serializers import (
    AdoptResultSerializer,
    AdoptSerializer,
    CdromInsertSerializer,
    DataVolumeOperationSerializer,
    DataVolumeSerializer,
    DiskAddSerializer,
    DiskOperationSerializer,
    DiskSerializer,
    DiskUpdateSerializer,
    FlavorSerializer,
    ForeignDomainSerializer,
    NicAddSerializer,
    NicOperationSerializer,
    NicSerializer,
    NicUpdateResultSerializer,
    NicUpdateSerializer,
    ReleaseResultSerializer,
    ReleaseSerializer,
    SnapshotCreateSerializer,
    SnapshotOperationSerializer,
    SnapshotSerializer,
    VMActionSerializer,
    VMBulkCreateSerializer,
    VMBulkResultSerializer,
    VMCreateSerializer,
    VMEventSerializer,
    VMExtendSerializer,
    VMGrowDiskSerializer,
    VMListQuerySerializer,
    VMMigrateSerializer,
    VMOperationSerializer,
    VMSerializer,
    VMTemplateSerializer,
    VMUpdateSerializer,
)

WRONG_STATE = OpenApiResponse(ErrorSerializer, description="The VM's state does not allow this action.")
VM_ID = OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                         description="The VM's numeric id or its UUID.")


SNAPSHOT_ID = OpenApiParameter("sid", OpenApiTypes.STR, OpenApiParameter.PATH,
                               description="The snapshot's numeric id or its name.")
DISK_ID = OpenApiParameter("disk_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                           description="The disk's numeric id, its target (vdb, sda) or its data disk's label.")
DELETE_VOLUME = OpenApiParameter("delete_volume", OpenApiTypes.BOOL, OpenApiParameter.QUERY, required=False,
                                 description="true: also delete the data disk (refused while other VMs use it); "
                                             "default false: detach it and keep it.")
NIC_ID = OpenApiParameter("nic_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                          description="The NIC's numeric id or its MAC.")


# What VMSerializer reads beyond the VM's row (its selectors join owner, group, host, image, flavor, CD).
VM_PREFETCH = (Prefetch("nics", queryset=VMNic.objects.select_related("network")), "pinned_hosts")


def vm_prefetch(user) -> tuple:
    """VM_PREFETCH for what `user` is shown: pinned hosts are administrators' fields (VMSerializer.ADMIN_ONLY)."""
    return VM_PREFETCH if is_admin(user) else VM_PREFETCH[:1]


# The list's page joins five of them and fetches the CD-ROM's image apart (no query while no VM of the page
# has one): PostgreSQL took longer to plan the page with a sixth join (~3.5 ms) than with five (~1.3 ms)
# and to run it (~0.7 ms) at 10,000 VMs (issue #13).
VM_LIST_JOINS = ("owner", "group", "host", "image", "flavor")


def _operation(request, result: ActionResult, *, created: bool = False) -> Response:
    """202 with the job when work was queued, 200 with a message for a no-op."""
    body = VMOperationSerializer(
        {"message": result.message, "vm": result.vm, "job": result.job}, context={"request": request}).data
    if result.job is None:
        return Response(body, status=status.HTTP_200_OK)
    headers = {"Location": body["vm"]["url"]} if created else {}
    return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


def _power_route(name: str):
    """A convenience route `/api/vms/{id}/<name>/`, the same service as POST .../actions/."""

    def view(self, request, pk=None):
        return self._act(request, pk, name)

    view.__name__ = name
    view.__doc__ = f"{name.replace('_', ' ').capitalize()} the VM (same as POST actions/ with action={name})."
    view = extend_schema(
        request=None, parameters=[VM_ID],
        responses={202: VMOperationSerializer, 200: VMOperationSerializer, 404: NOT_FOUND, 409: WRONG_STATE},
        tags=["vms"],
    )(view)
    return action(detail=True, methods=["post"], url_path=name, url_name=name)(view)


@extend_schema_view(
    retrieve=extend_schema(parameters=[VM_ID], responses={200: VMSerializer, 404: NOT_FOUND}),
)
class VMViewSet(viewsets.GenericViewSet):
    """Virtual machines you own, share through a group, or (staff) all of them."""

    serializer_class = VMSerializer
    pagination_class = Pagination
    filter_backends: list = []
    queryset = VM.objects.none()  # for schema introspection; reads go through vms.selectors

    # Input shapes per action (also what the browsable API renders as its form).
    action_serializers = {"create": VMCreateSerializer, "bulk": VMBulkCreateSerializer, "partial_update": VMUpdateSerializer,
                          "actions": VMActionSerializer, "jobs": JobSerializer,
                          "events": VMEventSerializer,
                          "snapshots": SnapshotCreateSerializer, "snapshot": SnapshotSerializer,
                          "snapshot_revert": SnapshotSerializer, "grow_disk": VMGrowDiskSerializer,
                          "nics": NicAddSerializer, "nic": NicSerializer, "cdrom": CdromInsertSerializer,
                          "release": ReleaseSerializer, "template": VMTemplateSerializer,
                          "migrate": VMMigrateSerializer,
                          "disks": DiskAddSerializer, "disk": DiskUpdateSerializer}

    def get_serializer_class(self):
        return self.action_serializers.get(self.action, VMSerializer)

    def get_object(self) -> VM:
        return vm_get(user=self.request.user, vm_id=self.kwargs["pk"])

    def get_cursor_ordering(self) -> tuple[str, ...] | None:
        """The VM list offers `?pagination=cursor` (portal.api.Pagination), in its own order."""
        return ("name", "id") if self.action == "list" else None

    @extend_schema(parameters=[VMListQuerySerializer], responses={200: VMSerializer(many=True), 400: INVALID})
    def list(self, request):
        """VMs you can see, by name; filter by status or a search term (staff: also owner and host).
        `?pagination=cursor`: cursor pages (no count; follow `next`)."""
        query = VMListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = (vm_list(user=request.user, **query.validated_data).select_related(None).select_related(*VM_LIST_JOINS)
              .prefetch_related(*vm_prefetch(request.user), "cdrom"))
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(VMSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        request=VMCreateSerializer,
        responses={
            202: OpenApiResponse(VMOperationSerializer, description="Accepted: the VM is being created."),
            400: INVALID,
            403: OpenApiResponse(QuotaErrorSerializer, description="Quota exceeded, or not a member of the group."),
            409: OpenApiResponse(ErrorSerializer, description="No host can take the VM."),
        },
    )
    def create(self, request):
        """Create a VM (and start it unless `start` is false). Answers 202 with the create job.

        `networks` omitted or null: a NIC on your default network (if any); `[]`: no NIC.
        """
        data = VMCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields["user_data"] = fields.get("user_data") or ""
        result = vm_create(actor=request.user, via=Via.API, **fields)
        return _operation(request, result, created=True)

    @extend_schema(
        request=VMBulkCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                                     description="A retry with the same key and body creates nothing new (200).")],
        responses={
            202: OpenApiResponse(VMBulkResultSerializer, description="Accepted: the VMs are being created; `job` "
                                                                     "is the parent job (its children: one per VM)."),
            200: OpenApiResponse(VMBulkResultSerializer, description="A replay: this idempotency key's earlier "
                                                                     "request, nothing new created."),
            400: INVALID,
            403: OpenApiResponse(QuotaErrorSerializer, description="The batch does not fit the quota (nothing was "
                                                                   "created), or not allowed."),
            409: OpenApiResponse(ErrorSerializer, description="No host can take the VMs."),
            422: OpenApiResponse(ErrorSerializer, description="The idempotency key was used for another request."),
        },
    )
    @action(detail=False, methods=["post"], url_path="bulk", url_name="bulk")
    def bulk(self, request):
        """Create several VMs from one image or template (names from `name_pattern`), with one parent job.

        The quota of the whole batch is checked first: all or nothing, or with `partial` as many as fit.
        """
        data = VMBulkCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields["user_data"] = fields.get("user_data") or ""
        fields["description"] = fields.get("description") or ""
        header = request.headers.get("Idempotency-Key")
        if header is not None and fields.get("idempotency_key") not in (None, "", header):
            raise ValidationFailed("The Idempotency-Key header and the idempotency_key field differ.",
                                   field="idempotency_key")
        fields["idempotency_key"] = header if header is not None else fields.get("idempotency_key")
        result = vm_bulk_create(actor=request.user, via=Via.API, **fields)
        body = VMBulkResultSerializer({
            "message": result.message, "job": result.job, "requested": result.requested, "created": result.created,
            "why_fewer": result.why_fewer, "replayed": result.replayed,
            "vms": [vm.pk for vm in result.vms] if result.vms else list(result.job.result.get("vms", [])),
        }, context={"request": request}).data
        return Response(body, status=status.HTTP_200_OK if result.replayed else status.HTTP_202_ACCEPTED,
                        headers={"Location": body["job"]["url"]})

    def retrieve(self, request, pk=None):
        """One VM, by id or UUID."""
        vm = self.get_object()
        prefetch_related_objects([vm], *vm_prefetch(request.user))  # its NICs once (with networks), not once per use
        return Response(VMSerializer(vm, context={"request": request}).data)

    @extend_schema(parameters=[VM_ID], request=VMUpdateSerializer,
                   responses={200: VMSerializer, 400: INVALID, 404: NOT_FOUND,
                              403: OpenApiResponse(ErrorSerializer, description="A scheduling field sent by "
                                                                                "someone who is not an administrator.")})
    def partial_update(self, request, pk=None):
        """Rename the VM or change its description. Administrators may also set `highly_available`,
        `ha_priority`, `pinned_hosts` (host names) and `required_tags`; anyone else sending one of these
        gets 403 and nothing changes. All given fields change together or not at all; the answer's
        `warnings` list what the scheduling settings do not do yet (e.g. a pin applies at the next move)."""
        data = VMUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        scheduling = {name: fields.pop(name) for name in SCHEDULING_FIELDS if name in fields}
        vm = self.get_object()
        warnings: tuple[str, ...] = ()
        with transaction.atomic():
            if scheduling:
                warnings = vm_scheduling_update(actor=request.user, via=Via.API, vm=vm, **scheduling).warnings
            if fields or not scheduling:
                vm = vm_update(actor=request.user, via=Via.API, vm=vm, **fields)
        body = VMSerializer(vm_get(user=request.user, vm_id=vm.pk), context={"request": request}).data
        if scheduling:
            body["warnings"] = list(warnings)
        return Response(body)

    @extend_schema(parameters=[VM_ID], request=None,
                   responses={202: VMOperationSerializer, 200: OpenApiResponse(
                       VMOperationSerializer, description="Already being deleted."), 404: NOT_FOUND,
                       409: WRONG_STATE})
    def destroy(self, request, pk=None):
        """Power off and delete the VM with its disks. Answers 202 with the delete job."""
        result = vm_delete(actor=request.user, via=Via.API, vm=self.get_object())
        return _operation(request, result)

    @extend_schema(
        parameters=[VM_ID], request=VMActionSerializer,
        responses={
            202: OpenApiResponse(VMOperationSerializer, description="Accepted: the job carries it out."),
            200: OpenApiResponse(VMOperationSerializer, description="Nothing to do (e.g. start a running VM)."),
            400: INVALID, 404: NOT_FOUND, 409: WRONG_STATE,
        },
    )
    @action(detail=True, methods=["post"], url_path="actions", url_name="actions")
    def actions(self, request, pk=None):
        """Run a power action: start, stop (ACPI), force_off, reboot, pause or resume."""
        data = VMActionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._act(request, pk, data.validated_data["action"])

    def _act(self, request, pk, name: str) -> Response:
        result = vm_action(actor=request.user, via=Via.API, vm=self.get_object(), action=name)
        return _operation(request, result)

    @extend_schema(parameters=[VM_ID], request=ReleaseSerializer,
                   responses={200: OpenApiResponse(ReleaseResultSerializer, description="Released."),
                              403: OpenApiResponse(ErrorSerializer, description="Not an administrator."),
                              404: NOT_FOUND, 409: WRONG_STATE})
    @action(detail=True, methods=["post"], url_path="release", url_name="release")
    def release(self, request, pk=None):
        """Administrators: the portal forgets the VM; its domain keeps running and its disks stay, listed
        as a foreign domain again."""
        vm = self.get_object()
        data = ReleaseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        vm_release(actor=request.user, via=Via.API, vm=vm, reason=data.validated_data.get("reason") or "")
        return Response(ReleaseResultSerializer({"message": (
            f"Released {vm.name}: the portal forgot it; domain {vm.domain_name} and its disks stay on "
            f"{vm.host.name}, listed as a foreign domain.")}).data)

    @extend_schema(parameters=[VM_ID], responses={200: JobSerializer(many=True), 404: NOT_FOUND})
    @action(detail=True, methods=["get"], url_path="jobs", url_name="jobs")
    def jobs(self, request, pk=None):
        """The VM's jobs, newest first."""
        page = self.paginate_queryset(vm_jobs(vm=self.get_object()))
        return self.get_paginated_response(JobSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(parameters=[VM_ID], responses={200: VMEventSerializer(many=True), 404: NOT_FOUND})
    @action(detail=True, methods=["get"], url_path="events", url_name="events")
    def events(self, request, pk=None):
        """The VM's audit trail, newest first: who asked for what, through which door, and how it ended."""
        page = self.paginate_queryset(vm_audit_events(vm=self.get_object()))
        return self.get_paginated_response(
            VMEventSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        parameters=[VM_ID], request=VMGrowDiskSerializer,
        responses={
            202: OpenApiResponse(VMOperationSerializer, description="Accepted: the job grows the disk."),
            200: OpenApiResponse(VMOperationSerializer, description="The disk has that size already."),
            400: INVALID, 403: OpenApiResponse(QuotaErrorSerializer, description="Disk quota exceeded."),
            404: NOT_FOUND, 409: OpenApiResponse(ErrorSerializer, description="VM busy, or the host cannot grow disks."),
        },
    )
    @extend_schema(parameters=[VM_ID], request=VMExtendSerializer,
                   responses={200: VMSerializer, 400: OpenApiResponse(ErrorSerializer, description="Beyond the lease "
                              "policy (max lease, max extension, max total), or neither days nor until."),
                              403: OpenApiResponse(ErrorSerializer, description="Only administrators remove a lease."),
                              404: NOT_FOUND}, tags=["vms"])
    @action(detail=True, methods=["post"], url_path="extend", url_name="extend")
    def extend(self, request, pk=None):
        """Extend the VM's lease by `days`, or to `until`, within the lease policy of its group (administrators:
        any end; `{"until": null}` removes the lease). Answers the VM with its new `expires_at`."""
        data = VMExtendSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        vm = self.get_object()
        if "until" in fields and fields["until"] is None and fields.get("days") is None:
            vm = vm_lease_set(actor=request.user, via=Via.API, vm=vm, expires_at=None)
        else:
            vm = vm_lease_extend(actor=request.user, via=Via.API, vm=vm, days=fields.get("days"),
                                 until=fields.get("until"))
        vm = self.get_object()
        prefetch_related_objects([vm], *vm_prefetch(request.user))
        return Response(VMSerializer(vm, context={"request": request}).data)

    @action(detail=True, methods=["post"], url_path="grow_disk", url_name="grow-disk")
    def grow_disk(self, request, pk=None):
        """Grow the VM's disk to `disk_gib` (never shrinks); live while it runs. Charged to the disk quota."""
        data = VMGrowDiskSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = vm_grow_disk(actor=request.user, via=Via.API, vm=self.get_object(),
                              disk_gib=data.validated_data["disk_gib"])
        return _operation(request, result)

    @extend_schema(
        parameters=[VM_ID], request=VMMigrateSerializer,
        responses={
            202: OpenApiResponse(VMOperationSerializer, description="Accepted: the job migrates the VM live; its "
                                                                    "progress, downtime and wall time are on the job."),
            400: OpenApiResponse(ErrorSerializer, description="Unknown host, or one that cannot take the VM (other "
                                                              "cluster, disabled, down, the VM's own host)."),
            403: OpenApiResponse(ErrorSerializer, description="Only administrators migrate VMs."),
            404: NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="The VM is not running or paused, is busy, or no host "
                                                              "has room for it."),
        },
        tags=["vms"],
    )
    @action(detail=True, methods=["post"], url_path="migrate", url_name="migrate")
    def migrate(self, request, pk=None):
        """Live-migrate the running VM to `host` (name or id), or to the best host of its cluster without one.
        Administrators only; a failed migration leaves the VM running where it was."""
        data = VMMigrateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        vm = self.get_object()
        result = vm_migrate(actor=request.user, via=Via.API, vm=vm, host=data.validated_data.get("host") or None,
                            reason=data.validated_data.get("reason", ""))
        return _operation(request, result)

    @extend_schema(
        parameters=[VM_ID], request=VMTemplateSerializer,
        responses={
            202: OpenApiResponse(VMOperationSerializer, description="Accepted: the job makes the template."),
            400: INVALID, 403: OpenApiResponse(QuotaErrorSerializer, description="Not the VM's owner, or disk quota "
                                                                                   "exceeded."),
            404: NOT_FOUND, 409: OpenApiResponse(ErrorSerializer, description="The VM is not stopped, or busy."),
        },
    )
    @action(detail=True, methods=["post"], url_path="template", url_name="template")
    def template(self, request, pk=None):
        """Seal the stopped VM into a template (a job): its disk copied into a new image with its sizes."""
        data = VMTemplateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        vm = self.get_object()
        job = vm_template_create(actor=request.user, via=Via.API, vm=vm, **data.validated_data)
        vm.refresh_from_db()
        result = ActionResult(vm, job, f"Making template {data.validated_data['name']} of {vm.name}.")
        return _operation(request, result)

    @extend_schema(
        methods=["GET"], parameters=[VM_ID], request=None,
        responses={200: SnapshotSerializer(many=True), 404: NOT_FOUND})
    @extend_schema(
        methods=["POST"], parameters=[VM_ID], request=SnapshotCreateSerializer,
        responses={202: OpenApiResponse(SnapshotOperationSerializer, description="Accepted: the job takes it."),
                   400: INVALID, 404: NOT_FOUND,
                   409: OpenApiResponse(ErrorSerializer, description="VM busy, or too many snapshots.")})
    @action(detail=True, methods=["get", "post"], url_path="snapshots", url_name="snapshots")
    def snapshots(self, request, pk=None):
        """GET: the VM's snapshots, oldest first. POST: take one (with the memory when the VM runs)."""
        vm = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(vm_snapshots(vm=vm))
            return self.get_paginated_response(
                SnapshotSerializer(page, many=True, context={"request": request}).data)
        data = SnapshotCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._snapshot_operation(request, snapshot_create(
            actor=request.user, via=Via.API, vm=vm, name=data.validated_data.get("name"),
            description=data.validated_data.get("description") or ""))

    @extend_schema(methods=["GET"], parameters=[VM_ID, SNAPSHOT_ID], request=None,
                   responses={200: SnapshotSerializer, 404: NOT_FOUND})
    @extend_schema(methods=["DELETE"], parameters=[VM_ID, SNAPSHOT_ID], request=None,
                   responses={202: SnapshotOperationSerializer, 404: NOT_FOUND, 409: WRONG_STATE})
    @action(detail=True, methods=["get", "delete"], url_path=r"snapshots/(?P<sid>[^/]+)", url_name="snapshot")
    def snapshot(self, request, pk=None, sid=None):
        """GET: one snapshot (by id or name). DELETE: delete it; the VM stays as it is."""
        vm = self.get_object()
        if request.method == "GET":
            found = vm_snapshot_get(vm=vm, key=sid)
            return Response(SnapshotSerializer(found, context={"request": request}).data)
        return self._snapshot_operation(request, snapshot_delete(actor=request.user, via=Via.API, vm=vm, snapshot=sid))

    @extend_schema(parameters=[VM_ID, SNAPSHOT_ID], request=None,
                   responses={202: SnapshotOperationSerializer, 404: NOT_FOUND, 409: WRONG_STATE})
    @action(detail=True, methods=["post"], url_path=r"snapshots/(?P<sid>[^/]+)/revert", url_name="snapshot-revert")
    def snapshot_revert(self, request, pk=None, sid=None):
        """Revert the VM to the snapshot: changes since are lost; it comes back running if the RAM was kept."""
        vm = self.get_object()
        return self._snapshot_operation(request, snapshot_revert(actor=request.user, via=Via.API, vm=vm, snapshot=sid))

    @extend_schema(
        methods=["GET"], parameters=[VM_ID], request=None,
        responses={200: NicSerializer(many=True), 404: NOT_FOUND})
    @extend_schema(
        methods=["POST"], parameters=[VM_ID], request=NicAddSerializer,
        responses={202: OpenApiResponse(NicOperationSerializer, description="Accepted: the job adds the NIC."),
                   400: INVALID, 404: NOT_FOUND,
                   409: OpenApiResponse(ErrorSerializer, description="VM busy or in the wrong state, too many NICs, "
                                                                     "or the network is not on the VM's host.")})
    @action(detail=True, methods=["get", "post"], url_path="nics", url_name="nics")
    def nics(self, request, pk=None):
        """GET: the VM's NICs in device order. POST: add one on a network you may use (hot-plugged while it runs)."""
        vm = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(vm_nics(vm=vm))
            return self.get_paginated_response(NicSerializer(page, many=True, context={"request": request}).data)
        data = NicAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._nic_operation(request, vm_nic_add(
            actor=request.user, via=Via.API, vm=vm, network=data.validated_data["network"],
            model=data.validated_data.get("model") or VMNic.Model.VIRTIO, mac=data.validated_data.get("mac")),
            created=True)

    @extend_schema(methods=["GET"], parameters=[VM_ID, NIC_ID], request=None,
                   responses={200: NicSerializer, 404: NOT_FOUND})
    @extend_schema(methods=["DELETE"], parameters=[VM_ID, NIC_ID], request=None,
                   responses={202: OpenApiResponse(NicOperationSerializer, description="Accepted: the job removes it."),
                              404: NOT_FOUND, 409: WRONG_STATE})
    @extend_schema(methods=["PATCH"], parameters=[VM_ID, NIC_ID], request=NicUpdateSerializer,
                   responses={200: NicUpdateResultSerializer, 400: INVALID, 404: NOT_FOUND, 409: WRONG_STATE})
    @action(detail=True, methods=["get", "delete", "patch"], url_path=r"nics/(?P<nic_id>[^/]+)", url_name="nic")
    def nic(self, request, pk=None, nic_id=None):
        """GET: one NIC (by id or MAC). DELETE: remove it; a running guest is asked to release it.
        PATCH: change its model and device properties (boot_order); they apply at the VM's next start."""
        vm = self.get_object()
        found = vm_nic_get(vm=vm, key=nic_id)
        if request.method == "GET":
            return Response(NicSerializer(found, context={"request": request}).data)
        if request.method == "PATCH":
            data = NicUpdateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            nic, job, message = vm_nic_update(actor=request.user, via=Via.API, vm=vm, nic=found,
                                              model=data.validated_data.get("model"),
                                              properties=data.validated_data.get("properties"))
            return Response(NicUpdateResultSerializer({"message": message, "nic": nic, "job": job},
                                                      context={"request": request}).data)
        return self._nic_operation(request, vm_nic_remove(actor=request.user, via=Via.API, vm=vm, nic=found))

    @extend_schema(
        methods=["POST"], parameters=[VM_ID], request=CdromInsertSerializer,
        responses={202: OpenApiResponse(VMOperationSerializer, description="Accepted: the job inserts the ISO."),
                   200: OpenApiResponse(VMOperationSerializer, description="That ISO is in the drive already."),
                   400: INVALID, 404: NOT_FOUND,
                   409: OpenApiResponse(ErrorSerializer, description="VM busy or in the wrong state, or it runs "
                                                                     "without a CD-ROM drive (stop it first).")})
    @extend_schema(
        methods=["DELETE"], parameters=[VM_ID], request=None,
        responses={202: OpenApiResponse(VMOperationSerializer, description="Accepted: the job ejects the CD."),
                   200: OpenApiResponse(VMOperationSerializer, description="The drive is empty already."),
                   404: NOT_FOUND, 409: WRONG_STATE})
    @action(detail=True, methods=["post", "delete"], url_path="cdrom", url_name="cdrom")
    def cdrom(self, request, pk=None):
        """POST: put an ISO you may use into the VM's CD-ROM drive (live while it runs; a stopped VM
        without a drive gets one). DELETE: eject it; the VM then boots from its disk."""
        vm = self.get_object()
        if request.method == "DELETE":
            return _operation(request, vm_cdrom_eject(actor=request.user, via=Via.API, vm=vm))
        data = CdromInsertSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _operation(request, vm_cdrom_insert(actor=request.user, via=Via.API, vm=vm,
                                                   image=data.validated_data["image"]))

    # --- disks (issue #11): list, add or attach, grow and tune, detach or delete -----------------
    @extend_schema(
        methods=["GET"], parameters=[VM_ID], request=None,
        responses={200: DiskSerializer(many=True), 404: NOT_FOUND})
    @extend_schema(
        methods=["POST"], parameters=[VM_ID], request=DiskAddSerializer,
        responses={202: OpenApiResponse(DiskOperationSerializer, description="Accepted: the job adds the disk "
                                                                             "(hot-plugged while the VM runs)."),
                   400: INVALID, 404: NOT_FOUND,
                   403: OpenApiResponse(QuotaErrorSerializer, description="Disk quota exceeded, or a property you "
                                                                          "may not set."),
                   409: OpenApiResponse(ErrorSerializer, description="VM busy or in the wrong state, or the data "
                                                                     "disk is in use (read-write attach of a disk "
                                                                     "another VM uses).")})
    @action(detail=True, methods=["get", "post"], url_path="disks", url_name="disks")
    def disks(self, request, pk=None):
        """GET: the VM's disks in target order. POST: add a new blank disk (`size_gib`) or attach one of your
        data disks (`volume`, by id or label), on virtio-blk or virtio-SCSI, read-only or not."""
        vm = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(vm_disks(vm=vm))
            return self.get_paginated_response(DiskSerializer(page, many=True, context={"request": request}).data)
        data = DiskAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        volume = fields.pop("volume", None)
        size = fields.pop("size_gib", None)
        with size_field():
            result = disk_services.vm_disk_add(
                actor=request.user, via=Via.API, vm=vm, size_gib=size,
                volume=volume if volume not in ("", None) else None, bus=fields["bus"] or VMDisk.Bus.VIRTIO,
                readonly=fields["readonly"], shareable=fields["shareable"], label=fields["label"],
                pool=fields["pool"] or None, properties=fields["properties"] or None)
        return self._disk_operation(request, result, created=True)

    @extend_schema(methods=["GET"], parameters=[VM_ID, DISK_ID], request=None,
                   responses={200: DiskSerializer, 404: NOT_FOUND})
    @extend_schema(methods=["PATCH"], parameters=[VM_ID, DISK_ID], request=DiskUpdateSerializer,
                   responses={202: OpenApiResponse(DiskOperationSerializer, description="Accepted: a job grows it "
                                                                                        "or applies the properties."),
                              200: OpenApiResponse(DiskOperationSerializer, description="Done without a job (e.g. "
                                                                                        "properties for the next start)."),
                              400: INVALID, 404: NOT_FOUND,
                              403: OpenApiResponse(QuotaErrorSerializer, description="Disk quota exceeded, or a "
                                                                                     "property you may not set."),
                              409: WRONG_STATE})
    @extend_schema(methods=["DELETE"], parameters=[VM_ID, DISK_ID, DELETE_VOLUME], request=None,
                   responses={202: OpenApiResponse(DiskOperationSerializer, description="Accepted: the job detaches "
                                                                                        "(and deletes) it."),
                              400: INVALID, 404: NOT_FOUND,
                              409: OpenApiResponse(ErrorSerializer, description="The boot disk, a busy VM, or a disk "
                                                                                "other VMs still use.")})
    @action(detail=True, methods=["get", "patch", "delete"], url_path=r"disks/(?P<disk_id>[^/]+)", url_name="disk")
    def disk(self, request, pk=None, disk_id=None):
        """GET: one disk (by id, target or label). PATCH: grow it (`size_gib`) and/or change its `properties`.
        DELETE: detach it (`?delete_volume=true`: and delete it)."""
        vm = self.get_object()
        found = vm_disk_get(vm=vm, key=disk_id)
        if request.method == "GET":
            return Response(DiskSerializer(found, context={"request": request}).data)
        if request.method == "DELETE":
            flag = str(request.query_params.get("delete_volume", "false")).strip().lower()
            if flag not in ("true", "false", "1", "0", "yes", "no", ""):
                raise ValidationFailed("delete_volume is true or false.", field="delete_volume")
            return self._disk_operation(request, disk_services.vm_disk_remove(
                actor=request.user, via=Via.API, vm=vm, disk=found, delete_volume=flag in ("true", "1", "yes")))
        data = DiskUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        with size_field():
            found, job, message = disk_services.vm_disk_change(
                actor=request.user, via=Via.API, vm=vm, disk=found, size_gib=fields.get("size_gib"),
                properties=fields["properties"] if "properties" in fields else None)
        return self._disk_operation(request, (vm_disk_get(vm=vm, key=found.pk), job, message))

    def _disk_operation(self, request, result: tuple[VMDisk, Job | None, str], *, created: bool = False) -> Response:
        disk, job, message = result
        body = DiskOperationSerializer({"message": message, "disk": disk, "job": job},
                                       context={"request": request}).data
        if job is None:
            return Response(body, status=status.HTTP_200_OK)
        headers = {"Location": body["disk"]["url"]} if created else {}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)

    def _nic_operation(self, request, result: tuple[VMNic, Job, str], *, created: bool = False) -> Response:
        nic, job, message = result
        body = NicOperationSerializer({"message": message, "nic": nic, "job": job}, context={"request": request}).data
        headers = {"Location": body["nic"]["url"]} if created else {}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)

    def _snapshot_operation(self, request, result) -> Response:
        body = SnapshotOperationSerializer(result._asdict(), context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)



# One convenience route per power action of the lifecycle table: /api/vms/{id}/<action>/.
for _name in VM_ACTIONS:
    setattr(VMViewSet, _name, _power_route(_name))


class ForeignDomainViewSet(CatalogViewSet):
    """Domains on the hosts that the portal did not create (staff only); `adopt/` makes one a portal VM."""

    serializer_class = ForeignDomainSerializer
    permission_classes = [IsAdminUser]
    queryset = ForeignDomain.objects.none()

    def get_serializer_class(self):
        return AdoptSerializer if self.action == "adopt" else ForeignDomainSerializer

    def visible(self, request: Request) -> QuerySet[ForeignDomain]:
        return foreign_domain_list()

    def find(self, request: Request, key: str) -> ForeignDomain:
        return foreign_domain_lookup(key=key)

    @extend_schema(
        parameters=[OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                     description="The foreign domain's numeric id or the domain's UUID.")],
        request=AdoptSerializer,
        responses={201: AdoptResultSerializer, 400: INVALID, 403: OpenApiResponse(
            QuotaErrorSerializer, description="Not an administrator, or the quota is exceeded (no override reason)."),
                   404: NOT_FOUND, 409: OpenApiResponse(ErrorSerializer, description="The domain cannot be adopted "
                                                        "(`problems` lists why).")},
    )
    @action(detail=True, methods=["post"], url_path="adopt", url_name="adopt")
    def adopt(self, request, pk=None):
        """Adopt the domain as a VM of `owner`, without restarting it. Answers 201 with the VM."""
        fd = self.find(request, str(pk))
        data = AdoptSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        vm = vm_adopt(actor=request.user, via=Via.API, host=fd.host, uuid=fd.uuid, owner=fields["owner"],
                      group=fields.get("group") or None, name=fields.get("name") or None,
                      override_reason=fields.get("override_reason") or "")
        body = AdoptResultSerializer(
            {"message": f"Adopted {fd.name} as {vm.name} for {vm.owner.get_username()}, without restarting it.",
             "delete_note": vm_delete_note(vm=vm), "vm": vm},
            context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["vm"]["url"]})


class FlavorViewSet(CatalogViewSet):
    """Size presets for new VMs."""

    serializer_class = FlavorSerializer
    queryset = Flavor.objects.none()

    def visible(self, request: Request) -> QuerySet[Flavor]:
        return flavor_list(user=request.user)

    def find(self, request: Request, key: str) -> Flavor:
        return flavor_get(user=request.user, name_or_id=key)


@extend_schema_view(
    list=extend_schema(responses={200: DataVolumeSerializer(many=True)}, tags=["disks"]),
    retrieve=extend_schema(parameters=[OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                                        description="The data disk's id or label.")],
                           responses={200: DataVolumeSerializer, 404: NOT_FOUND}, tags=["disks"]),
)
class DataVolumeViewSet(viewsets.GenericViewSet):
    """Your data disks (and your teams', and shareable ones you may use): which VMs they are attached to;
    a detached one can be deleted. New ones are made on a VM: POST /api/vms/{id}/disks/."""

    serializer_class = DataVolumeSerializer
    pagination_class = Pagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"
    queryset = Volume.objects.none()  # for schema introspection; reads go through vms.disks

    def list(self, request):
        page = self.paginate_queryset(data_volumes(actor=request.user))
        return self.get_paginated_response(DataVolumeSerializer(page, many=True, context={"request": request}).data)

    def retrieve(self, request, pk=None):
        return Response(DataVolumeSerializer(data_volume_get(actor=request.user, key=pk),
                                             context={"request": request}).data)

    @extend_schema(parameters=[OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                                description="The data disk's id or label.")],
                   request=None, tags=["disks"],
                   responses={202: OpenApiResponse(DataVolumeOperationSerializer, description="Accepted: the job "
                                                                                              "deletes it."),
                              404: NOT_FOUND, 403: OpenApiResponse(ErrorSerializer, description="Not yours."),
                              409: OpenApiResponse(ErrorSerializer, description="Still attached to a VM.")})
    def destroy(self, request, pk=None):
        """Delete a detached data disk and its data."""
        volume = data_volume_get(actor=request.user, key=pk)
        volume, job, message = disk_services.data_volume_delete(actor=request.user, via=Via.API, volume=volume)
        body = DataVolumeOperationSerializer({"message": message, "disk": volume, "job": job},
                                             context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED if job is not None else status.HTTP_200_OK)

"""Shapes of the REST API: input serializers parse types only, output serializers render rows.

Validation rules (names, sizes, quota, image and flavor lookup) live in vms.services, so the API
answers with the same messages as the web pages and Slack.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from cluster.models import ForeignDomain
from portal.actors import is_admin
from portal.api import row_url
from portal.api_rows import FastRowsMixin
from portal.jobs.api.serializers import JobSummarySerializer
from portal.models import AuditEvent
from storage.models import Volume
from vms.choices import VMStatus
from vms.models import VM, Flavor, Snapshot, VMDisk, VMNic
from vms.selectors import vm_ssh_command
from vms.services import VM_ACTIONS


@extend_schema_field(OpenApiTypes.INT)
class RawSizeField(serializers.Field):
    """Passes the raw JSON value through: vms.validation.validate_size says what is wrong with it."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "string", "enum": list(VM_ACTIONS)})
class ActionNameField(serializers.CharField):
    """An action name; the service rejects unknown ones with the list of valid actions."""


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class NameOrIdField(serializers.CharField):
    """An image or network given by name or by numeric id."""


class StartField(serializers.BooleanField):
    # DRF treats a missing checkbox in form-encoded input as False; here omitted means the default.
    default_empty_html = serializers.empty


# --- input ---------------------------------------------------------------------------------------

class VMCreateSerializer(serializers.Serializer):
    name = serializers.CharField(allow_blank=True, trim_whitespace=False,  # the service refuses "vm "
                                 help_text="1-63 characters: lowercase letters, digits and hyphens.")
    image = NameOrIdField(required=False, allow_null=True, allow_blank=True,
                          help_text="Image name or id; the default image when omitted.")
    flavor = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                   help_text="Flavor name; explicit sizes override its values.")
    vcpus = RawSizeField(required=False, allow_null=True)
    memory_mib = RawSizeField(required=False, allow_null=True)
    disk_gib = RawSizeField(required=False, allow_null=True)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)
    start = StartField(required=False, default=True, help_text="Start the VM once created (default true).")
    group = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                  help_text="Group (team) name: the VM is shared with it and uses its quota.")
    networks = serializers.ListField(
        child=NameOrIdField(), required=False, allow_null=True, allow_empty=True,
        help_text="Networks (names or ids) for the VM's NICs, one NIC each. Omitted or null: your default "
                  "network (if you have one); []: no NIC at all.")
    user_data = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False,
        help_text="cloud-init user-data (#cloud-config YAML or a #! script), for images that take cloud-init. "
                  "Never returned by the API.")
    clone = serializers.CharField(
        required=False, allow_blank=True, allow_null=True,
        help_text='How the disk is made from the image: "thin" (default; a qcow2 overlay on the image, which is '
                  'kept while thin clones exist) or "full" (a standalone copy). Without a flavor or sizes, a '
                  "template's own sizes are used.")
    # --- storage domains (issue #11) ---
    storage_domain = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=100,
        help_text="The data storage domain the VM's disks go to (GET /api/storage-domains/); default: the portal's "
                  "own pool. Only hosts that see it are eligible.")
    # --- leases (issue #14) ---
    lease_days = RawSizeField(required=False, allow_null=True,
                              help_text='Lease in days (7 or "7d"; 0 or "none": no lease, where the policy allows). '
                                        "Omitted: the group's (or site's) default lease.")
    expires_at = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                       help_text="Or the lease's end: an ISO date or date-time.")


class VMExtendSerializer(serializers.Serializer):
    days = RawSizeField(required=False, allow_null=True, help_text='Days to add (7 or "7d"): from the current end, or '
                                                                   "from now once expired.")
    until = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                  help_text="Or the new end (ISO date or date-time). Administrators: null removes "
                                            "the lease.")


class VMBulkCreateSerializer(VMCreateSerializer):
    """Many VMs from one image or template (issue #14): VMCreateSerializer's fields but `name`, and the batch's."""

    name = None  # type: ignore[assignment]  # the names come from name_pattern
    count = RawSizeField(help_text="How many VMs (1 to the portal's PORTAL_BULK_MAX_COUNT, 100 by default).")
    name_pattern = serializers.CharField(
        allow_blank=True, trim_whitespace=False,
        help_text="Names of the VMs: {n} is each VM's number, with an optional integer format, e.g. lab-{n:02} "
                  "gives lab-01, lab-02, ... Required to contain {n} when count > 1.")
    start_number = RawSizeField(required=False, default=1, help_text="The first number (default 1).")
    partial = serializers.BooleanField(
        required=False, default=False,
        help_text="false (default): all or nothing; true: create as many as the quota and the hosts allow, and say "
                  "why not more.")
    owner = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                  help_text="Administrators: the username the VMs are created for (their quota).")
    idempotency_key = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=200,
        help_text="Or the Idempotency-Key header: the same request sent again with the same key creates nothing "
                  "new and answers 200 with the first one's job; the same key with other parameters is refused "
                  "(422). Keys are kept 24 hours.")

    def validate(self, attrs):
        # Unknown fields are refused rather than ignored: a batch makes many VMs, and a misspelt or invented
        # field ("dry_run": true, trial of issue #14) must not make them anyway.
        unknown = sorted(set(getattr(self, "initial_data", {}) or {}) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().validate(attrs)


class VMBulkResultSerializer(serializers.Serializer):
    """What a bulk create answers: the parent job, how many VMs were asked for and made, and why fewer."""

    message = serializers.CharField()
    job = JobSummarySerializer()
    requested = serializers.IntegerField()
    created = serializers.IntegerField()
    why_fewer = serializers.CharField(help_text="Why fewer VMs than asked for were made (partial), else empty.")
    replayed = serializers.BooleanField(help_text="true: an earlier request with this idempotency key; nothing new.")
    vms = serializers.ListField(child=serializers.IntegerField(), help_text="The VMs' ids.")


class HostNamesField(serializers.ListField):
    """Host names in, host names out (also from a VM's pinned_hosts manager: the browsable API's form)."""

    def to_representation(self, data):
        if hasattr(data, "all"):
            return [host.name for host in data.all()]
        return super().to_representation(data)


class VMUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    # Administrators only (anyone else sending one of these gets 403): vms.scheduling.vm_scheduling_update.
    highly_available = serializers.BooleanField(
        required=False, help_text="Administrators: restart the VM on another host when its host is confirmed down.")
    ha_priority = serializers.IntegerField(required=False, help_text="Administrators: HA restart order, 0–100.")
    pinned_hosts = HostNamesField(
        child=serializers.CharField(), required=False, allow_empty=True,
        help_text="Administrators: host names (or ids) of the VM's cluster it may run on; [] unpins.")
    required_tags = serializers.ListField(
        child=serializers.CharField(), required=False, allow_empty=True,
        help_text="Administrators: host tags the VM needs, e.g. [\"ssd\"]; [] clears.")


class VMActionSerializer(serializers.Serializer):
    action = ActionNameField(help_text="One of: " + ", ".join(VM_ACTIONS))


class NicAddSerializer(serializers.Serializer):
    network = NameOrIdField(allow_blank=True, help_text="A network you may use, by name or id.")
    model = serializers.CharField(required=False, allow_blank=True, default=VMNic.Model.VIRTIO,
                                  help_text="virtio (default), e1000 or rtl8139.")
    mac = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                help_text="A unicast MAC; a free 52:54:00:xx:xx:xx one when omitted.")


class CdromInsertSerializer(serializers.Serializer):
    image = NameOrIdField(allow_blank=True, help_text="An ISO image you may use, by name or id.")


class VMListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=VMStatus.choices, required=False, help_text="Only VMs in this state.")
    search = serializers.CharField(required=False, help_text="Substring of the name or description.")
    owner = serializers.CharField(required=False, help_text="Owner's username (staff only; ignored otherwise).")
    host = serializers.CharField(required=False, help_text="Host name (staff only; ignored otherwise).")


# --- output --------------------------------------------------------------------------------------

class NicSerializer(FastRowsMixin, serializers.ModelSerializer):
    """A NIC of a VM: its network, MAC, model, state and the address its network's DHCP gave it."""

    network = serializers.SlugRelatedField(slug_field="name", read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    ip_address = serializers.IPAddressField(
        read_only=True, allow_null=True,
        help_text="The IPv4 address of the NIC's DHCP lease: null until the guest has one, while the VM is "
                  "stopped, and on bridged networks (the portal does not see the LAN's leases).")
    url = serializers.SerializerMethodField()

    class Meta:
        model = VMNic
        fields = ["id", "network", "mac", "model", "status", "status_label", "ip_address", "ip_seen_at",
                  "created_at", "url", "properties"]
        read_only_fields = fields

    def get_url(self, nic: VMNic) -> str:
        return row_url(self.context, "api-vm-nic", pk=nic.vm_id, nic_id=nic.pk)


class VMSerializer(FastRowsMixin, serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True)
    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    image = serializers.SlugRelatedField(slug_field="name", read_only=True)
    flavor = serializers.SlugRelatedField(slug_field="name", read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    url = serializers.SerializerMethodField()
    jobs_url = serializers.SerializerMethodField()
    snapshots_url = serializers.SerializerMethodField()
    events_url = serializers.SerializerMethodField()
    nics = NicSerializer(many=True, read_only=True)
    ssh = serializers.SerializerMethodField(
        help_text="A ready `ssh` command line once a NIC's address is known (null until then, or for images "
                  "without an SSH login).")
    nics_url = serializers.SerializerMethodField()
    disks_url = serializers.SerializerMethodField()
    cdrom_drive = serializers.BooleanField(read_only=True, help_text="The VM has a CD-ROM drive (boots from it first).")
    cdrom = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                         help_text="The ISO image in the CD-ROM drive (null: none, or an empty tray).")
    cdrom_url = serializers.SerializerMethodField()
    highly_available = serializers.BooleanField(
        read_only=True, help_text="Restarted on another host when its host is confirmed down.")
    ha_priority = serializers.IntegerField(read_only=True, help_text="Administrators only: HA restart order, 0–100.")
    pinned_hosts = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True,
        help_text="Administrators only: the hosts the VM may run on (empty: any host of its cluster).")
    required_tags = serializers.ListField(child=serializers.CharField(), read_only=True,
                                          help_text="Administrators only: host tags the VM needs.")

    class Meta:
        model = VM
        fields = ["id", "uuid", "name", "description", "status", "status_label", "power_state", "owner",
                  "group", "host", "image", "flavor", "vcpus", "memory_mib", "disk_gib", "domain_name",
                  "created_via", "last_error", "created_at", "updated_at", "status_changed_at", "expires_at", "nics", "ssh",
                  "cdrom_drive", "cdrom", "url", "jobs_url", "snapshots_url", "events_url", "nics_url", "disks_url", "cdrom_url",
                  "highly_available", "ha_priority", "pinned_hosts", "required_tags"]
        read_only_fields = fields

    ADMIN_ONLY = ("ha_priority", "pinned_hosts", "required_tags")  # owners see highly_available only

    def get_fields(self):
        """Administrators see every scheduling field; anyone else sees `highly_available` only. (Without a
        request — the OpenAPI schema — every field is listed.)"""
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None and not is_admin(getattr(request, "user", None)):
            for name in self.ADMIN_ONLY:
                fields.pop(name, None)
        return fields

    def get_ssh(self, vm: VM) -> str | None:
        return vm_ssh_command(vm=vm, nics=list(vm.nics.all()))  # (the list view prefetches the NICs)

    def get_nics_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-nics", pk=vm.pk)

    def get_disks_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-disks", pk=vm.pk)

    def get_cdrom_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-cdrom", pk=vm.pk)

    def get_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-detail", pk=vm.pk)

    def get_jobs_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-jobs", pk=vm.pk)

    def get_snapshots_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-snapshots", pk=vm.pk)

    def get_events_url(self, vm: VM) -> str:
        return row_url(self.context, "api-vm-events", pk=vm.pk)


class VMEventSerializer(serializers.ModelSerializer):
    """One row of a VM's audit trail, as the VM's page shows it under Activity."""

    actor = serializers.CharField(source="actor_name", read_only=True,
                                  help_text="Who asked (empty for the system: reconcile, the monitor).")
    job = serializers.UUIDField(source="job_id", read_only=True, allow_null=True,
                                help_text="The job that carried it out, if any (GET /api/jobs/{id}/).")

    class Meta:
        model = AuditEvent
        fields = ["id", "at", "actor", "via", "action", "outcome", "message", "job"]
        read_only_fields = fields


class VMOperationSerializer(serializers.Serializer):
    """What an action, create or delete answers: a message, the VM, and the job (null for a no-op)."""

    message = serializers.CharField()
    vm = VMSerializer()
    job = JobSummarySerializer(allow_null=True)


class VMTemplateSerializer(serializers.Serializer):
    name = serializers.CharField(allow_blank=True, help_text="The template's name (an image name: unique, "
                                                             "2-60 lowercase letters, digits or hyphens).")
    title = serializers.CharField(required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    visibility = serializers.CharField(required=False, default="private",
                                       help_text="private (default), group or public.")
    groups = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                   help_text="Group names that may use it (visibility group).")
    library = serializers.BooleanField(required=False, default=False,
                                       help_text="Administrators: a library template (no owner, no quota).")


class VMGrowDiskSerializer(serializers.Serializer):
    disk_gib = RawSizeField(help_text="The new size in GiB: more than the current one (disks only grow).")


class VMMigrateSerializer(serializers.Serializer):
    """A live migration (administrators only): to the named host, or to the best host of the cluster."""

    host = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                 help_text="The destination host's name or id; leave out for the best host the "
                                           "cluster's scheduler picks.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                   help_text="Why (kept in the audit log).")


class NicOperationSerializer(serializers.Serializer):
    """What a NIC add or remove answers: a message, the NIC and the job that carries it out."""

    message = serializers.CharField()
    nic = NicSerializer()
    job = JobSummarySerializer()


class SnapshotCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False,
                                 help_text="Letters, digits, dots, hyphens, underscores; snap-<time> when omitted.")
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)


class SnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Snapshot
        fields = ["id", "name", "description", "status", "status_label", "has_memory", "vm_state", "created_by",
                  "created_via", "created_at", "taken_at", "reverted_at", "url", "size_bytes"]
        read_only_fields = fields

    def get_url(self, snapshot: Snapshot) -> str:
        return row_url(self.context, "api-vm-snapshot", pk=snapshot.vm_id, sid=snapshot.pk)


class SnapshotOperationSerializer(serializers.Serializer):
    """What a snapshot create, revert or delete answers: a message, the snapshot and its job."""

    message = serializers.CharField()
    snapshot = SnapshotSerializer()
    job = JobSummarySerializer()


class FlavorSerializer(serializers.ModelSerializer):
    class Meta:
        model = Flavor
        fields = ["id", "name", "vcpus", "memory_mib", "disk_gib", "description", "is_public"]
        read_only_fields = fields


# --- adoption (administrators) --------------------------------------------------------------------

class ForeignDomainSerializer(serializers.ModelSerializer):
    """A domain on a host that the portal did not create (refreshed by each reconcile)."""

    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    adopt_url = serializers.SerializerMethodField()

    class Meta:
        model = ForeignDomain
        fields = ["id", "host", "uuid", "name", "state", "owner_hint", "first_seen_at", "last_seen_at", "adopt_url"]
        read_only_fields = fields

    def get_adopt_url(self, fd: ForeignDomain) -> str:
        return row_url(self.context, "api-foreign-domain-adopt", pk=fd.pk)


class AdoptSerializer(serializers.Serializer):
    owner = serializers.CharField(help_text="Username of the new owner (their quota, or the group's, is charged).")
    group = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                  help_text="Group (team) name: the VM is shared with it and uses its quota.")
    name = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                                 help_text="The VM's name; default: from the domain's title or name.")
    override_reason = serializers.CharField(
        required=False, allow_blank=True, allow_null=True,
        help_text="Given: adopt even beyond the quota; the reason is written in the audit log.")


class AdoptResultSerializer(serializers.Serializer):
    message = serializers.CharField()
    delete_note = serializers.CharField(help_text="What Delete will do to the VM from now on.")
    vm = VMSerializer()


class ReleaseSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                   help_text="Why (written in the audit log).")


class ReleaseResultSerializer(serializers.Serializer):
    message = serializers.CharField()


# --- disks (issue #11) ---------------------------------------------------------------------------

PROPERTIES_HELP = ("Device properties from the catalog (vms.properties): cache, io, discard, detect_zeroes, serial, "
                   "boot_order, I/O limits; administrators decide which ones users may set. null or \"\" removes one.")


class DiskAddSerializer(serializers.Serializer):
    """Add a new blank disk (`size_gib`) or attach an existing data disk (`volume`): exactly one of them."""

    size_gib = RawSizeField(required=False, allow_null=True, help_text="A new blank disk of this size in GiB.")
    volume = NameOrIdField(required=False, allow_null=True, allow_blank=True,
                           help_text="Attach this existing data disk (id or label) instead of making a new one.")
    bus = serializers.CharField(required=False, allow_blank=True, default=VMDisk.Bus.VIRTIO,
                                help_text="virtio (virtio-blk, default) or scsi (virtio-SCSI).")
    readonly = serializers.BooleanField(required=False, default=False)
    shareable = serializers.BooleanField(required=False, default=False,
                                         help_text="New disks: may be attached read-only to several VMs at once.")
    label = serializers.CharField(required=False, allow_blank=True, default="", max_length=200,
                                  help_text="New disks: the name you know it by.")
    storage_domain = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                           help_text="New disks: the storage domain (default: the host's).")
    pool = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                 help_text="Old name of storage_domain (still accepted).")
    properties = serializers.DictField(required=False, allow_empty=True, default=dict, help_text=PROPERTIES_HELP)

    def validate(self, attrs):
        # Unknown fields are refused rather than ignored (a misspelt field put the disk elsewhere, trial #5).
        unknown = sorted(set(getattr(self, "initial_data", {}) or {}) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        domain, pool = attrs.pop("storage_domain", None) or None, attrs.pop("pool", None) or None
        if domain and pool and domain != pool:
            raise serializers.ValidationError({"storage_domain": ["Give storage_domain (or its old name pool), "
                                                                  "not both."]})
        attrs["pool"] = domain or pool
        return attrs


class DiskUpdateSerializer(serializers.Serializer):
    """Grow the disk and/or change its properties (at least one)."""

    size_gib = RawSizeField(required=False, help_text="The new size in GiB: more than the current one (disks only grow).")
    properties = serializers.DictField(required=False, allow_empty=False, help_text=PROPERTIES_HELP)

    def validate(self, attrs):
        if "size_gib" not in attrs and "properties" not in attrs:
            raise serializers.ValidationError({"non_field_errors": ["Give size_gib, properties, or both."]})
        return attrs


class DiskSerializer(serializers.ModelSerializer):
    """A disk of a VM: where the guest sees it (target, bus), its size, flags, status and properties."""

    bus_label = serializers.CharField(source="get_bus_display", read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    size_gib = serializers.IntegerField(source="volume.capacity_gib", read_only=True)
    label = serializers.CharField(source="volume.label", read_only=True)
    shareable = serializers.BooleanField(source="volume.shareable", read_only=True)
    storage_domain = serializers.CharField(source="volume.pool.name", read_only=True)
    volume = serializers.IntegerField(source="volume_id", read_only=True,
                                      help_text="The data disk's id in /api/disks/ (boot disks are not listed there).")
    data_disk = serializers.SerializerMethodField(help_text="A data disk (may be detached); false: the boot disk or "
                                                            "the cloud-init seed.")
    properties = serializers.DictField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = VMDisk
        fields = ["id", "target", "bus", "bus_label", "size_gib", "label", "readonly", "shareable", "status",
                  "status_label", "properties", "data_disk", "volume", "storage_domain", "url"]
        read_only_fields = fields

    def get_data_disk(self, disk: VMDisk) -> bool:
        return disk.volume.owner_id is not None

    def get_url(self, disk: VMDisk) -> str:
        return row_url(self.context, "api-vm-disk", pk=disk.vm_id, disk_id=disk.pk)


class DiskOperationSerializer(serializers.Serializer):
    """What a disk add, remove, grow or update answers: a message, the disk and the job (null: no job)."""

    message = serializers.CharField()
    disk = DiskSerializer()
    job = JobSummarySerializer(allow_null=True)


class DiskAttachmentSerializer(serializers.Serializer):
    vm = serializers.CharField(source="vm.name")
    vm_id = serializers.IntegerField()
    target = serializers.CharField()
    readonly = serializers.BooleanField()


class DataVolumeSerializer(serializers.ModelSerializer):
    """A data disk: its label, size, who it belongs to, and the VMs it is attached to."""

    size_gib = serializers.IntegerField(source="capacity_gib", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True)
    storage_domain = serializers.CharField(source="pool.name", read_only=True)
    attachments = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Volume
        fields = ["id", "label", "size_gib", "shareable", "owner", "group", "storage_domain", "attachments",
                  "created_at", "url"]
        read_only_fields = fields

    @extend_schema_field(DiskAttachmentSerializer(many=True))
    def get_attachments(self, volume: Volume) -> list:
        rows = [a for a in volume.attachments.all() if a.vm.deleted_at is None]
        return DiskAttachmentSerializer(rows, many=True).data

    def get_url(self, volume: Volume) -> str:
        return row_url(self.context, "api-disk-detail", pk=volume.pk)


class DataVolumeOperationSerializer(serializers.Serializer):
    """What deleting a data disk answers: a message, the disk and the job that removes it."""

    message = serializers.CharField()
    disk = DataVolumeSerializer()
# --- NIC properties (issue #11) --------------------------------------------------------------------

class NicUpdateSerializer(serializers.Serializer):
    """A NIC's model and device properties; both apply at the VM's next start."""

    model = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                  help_text="virtio, e1000 or rtl8139 (unchanged when omitted).")
    properties = serializers.DictField(
        required=False, allow_null=True, default=None,
        help_text="Device properties to change, e.g. {\"boot_order\": 2}; null or \"\" removes one. "
                  "Users may set those an administrator allows (docs/storage.md, Device properties).")


class NicUpdateResultSerializer(serializers.Serializer):
    """What a NIC change answers: a message and the NIC (no job: the definition is written at once)."""

    message = serializers.CharField()
    nic = NicSerializer()
    job = JobSummarySerializer(allow_null=True)

"""Shapes of the REST API: input serializers parse types only, output serializers render rows.

Validation rules (names, sizes, quota, image and flavor lookup) live in vms.services, so the API
answers with the same messages as the web pages and Slack.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from portal.models import Job
from storage.models import Image
from vms.choices import VMStatus
from vms.models import VM, Flavor, Host, Snapshot
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
    """An image given by name or by numeric id."""


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


class VMUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class VMActionSerializer(serializers.Serializer):
    action = ActionNameField(help_text="One of: " + ", ".join(VM_ACTIONS))


class VMListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=VMStatus.choices, required=False, help_text="Only VMs in this state.")
    search = serializers.CharField(required=False, help_text="Substring of the name or description.")
    owner = serializers.CharField(required=False, help_text="Owner's username (staff only; ignored otherwise).")
    host = serializers.CharField(required=False, help_text="Host name (staff only; ignored otherwise).")


class JobListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Job._meta.get_field("status").choices, required=False)
    kind = serializers.CharField(required=False, help_text="Job kind, e.g. vm.create.")


# --- output --------------------------------------------------------------------------------------

class JobSummarySerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "step", "url"]
        read_only_fields = fields

    def get_url(self, job: Job) -> str:
        return reverse("api-job-detail", kwargs={"pk": str(job.pk)}, request=self.context.get("request"))


class JobSerializer(JobSummarySerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True)
    target_url = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField(help_text="Only for staff; empty otherwise.")

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "step", "actor", "via", "target_type", "target_id",
                  "target_name", "target_url", "params", "result", "error", "log", "attempts", "max_attempts",
                  "created_at", "started_at", "finished_at", "updated_at", "traceback", "url"]
        read_only_fields = fields

    def get_target_url(self, job: Job) -> str | None:
        if job.target_type == "vm" and job.target_id:
            return reverse("api-vm-detail", kwargs={"pk": job.target_id}, request=self.context.get("request"))
        return None

    def get_traceback(self, job: Job) -> str:
        request = self.context.get("request")
        return job.traceback if request is not None and request.user.is_staff else ""


class VMSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True)
    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    image = serializers.SlugRelatedField(slug_field="name", read_only=True)
    flavor = serializers.SlugRelatedField(slug_field="name", read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    url = serializers.SerializerMethodField()
    jobs_url = serializers.SerializerMethodField()
    snapshots_url = serializers.SerializerMethodField()

    class Meta:
        model = VM
        fields = ["id", "uuid", "name", "description", "status", "status_label", "power_state", "owner",
                  "group", "host", "image", "flavor", "vcpus", "memory_mib", "disk_gib", "domain_name",
                  "created_via", "last_error", "created_at", "updated_at", "status_changed_at", "url",
                  "jobs_url", "snapshots_url"]
        read_only_fields = fields

    def get_url(self, vm: VM) -> str:
        return reverse("api-vm-detail", kwargs={"pk": vm.pk}, request=self.context.get("request"))

    def get_jobs_url(self, vm: VM) -> str:
        return reverse("api-vm-jobs", kwargs={"pk": vm.pk}, request=self.context.get("request"))

    def get_snapshots_url(self, vm: VM) -> str:
        return reverse("api-vm-snapshots", kwargs={"pk": vm.pk}, request=self.context.get("request"))


class VMOperationSerializer(serializers.Serializer):
    """What an action, create or delete answers: a message, the VM, and the job (null for a no-op)."""

    message = serializers.CharField()
    vm = VMSerializer()
    job = JobSummarySerializer(allow_null=True)


class VMGrowDiskSerializer(serializers.Serializer):
    disk_gib = RawSizeField(help_text="The new size in GiB: more than the current one (disks only grow).")


class SnapshotCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                 help_text="Letters, digits, dots, hyphens, underscores; snap-<time> when omitted.")
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)


class SnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Snapshot
        fields = ["id", "name", "description", "status", "status_label", "has_memory", "vm_state", "created_by",
                  "created_via", "created_at", "taken_at", "reverted_at", "url"]
        read_only_fields = fields

    def get_url(self, snapshot: Snapshot) -> str:
        return reverse("api-vm-snapshot", kwargs={"pk": snapshot.vm_id, "sid": snapshot.pk},
                       request=self.context.get("request"))


class SnapshotOperationSerializer(serializers.Serializer):
    """What a snapshot create, revert or delete answers: a message, the snapshot and its job."""

    message = serializers.CharField()
    snapshot = SnapshotSerializer()
    job = JobSummarySerializer()


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["id", "name", "title", "description", "os_name", "format", "size_bytes", "boot_mode",
                  "min_disk_gib", "is_public", "is_default", "created_at"]
        read_only_fields = fields


class FlavorSerializer(serializers.ModelSerializer):
    class Meta:
        model = Flavor
        fields = ["id", "name", "vcpus", "memory_mib", "disk_gib", "description", "is_public"]
        read_only_fields = fields


class HostSerializer(serializers.ModelSerializer):
    effective_domain_type = serializers.CharField(read_only=True)
    vm_count = serializers.SerializerMethodField()

    class Meta:
        model = Host
        fields = ["id", "name", "uri", "enabled", "status", "domain_type", "effective_domain_type",
                  "kvm_boots_guests", "hostname", "libvirt_version", "cpus", "memory_mib", "free_memory_mib",
                  "last_seen_at", "last_error", "vm_count"]
        read_only_fields = fields

    def get_vm_count(self, host: Host) -> int:
        return host.vms.filter(status__in=VMStatus.COUNTED).count()


class ResourceUsageSerializer(serializers.Serializer):
    resource = serializers.CharField()
    label = serializers.CharField()
    unit = serializers.CharField()
    used = serializers.IntegerField()
    limit = serializers.IntegerField()
    remaining = serializers.IntegerField()
    percent = serializers.IntegerField()


class QuotaSubjectSerializer(serializers.Serializer):
    subject = serializers.CharField(help_text="'user' or 'group'.")
    name = serializers.CharField()
    resources = ResourceUsageSerializer(many=True)


class QuotaOverviewSerializer(serializers.Serializer):
    user = QuotaSubjectSerializer(help_text="Your personal quota (VMs without a group).")
    groups = QuotaSubjectSerializer(many=True, help_text="Quotas of the groups you belong to.")
    vm_limits = serializers.DictField(child=serializers.ListField(child=serializers.IntegerField()),
                                      help_text="Smallest and largest size of any single VM: [min, max].")

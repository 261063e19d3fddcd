"""Shapes of the images and uploads API."""

from __future__ import annotations

from django.contrib.auth.models import Group
from rest_framework import serializers

from portal.jobs.api.serializers import JobSummarySerializer
from storage.imageio import CONTAINERS, FORMATS
from storage.imports import SOURCES
from storage.models import Image


class ImageSerializer(serializers.ModelSerializer):
    owner: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True, help_text="The user whose space it is in; null: the library.")
    groups: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True, help_text="Who may use it when visibility is `group`.")

    class Meta:
        model = Image
        fields = ["id", "name", "title", "description", "os_name", "kind", "format", "source_format",
                  "size_bytes", "actual_size_bytes", "checksum_sha256", "boot_mode", "min_disk_gib", "cloud_init",
                  "login_user", "default_vcpus", "default_memory_mib", "visibility", "groups", "owner",
                  "is_default", "created_at"]
        read_only_fields = fields


class ImageUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    os_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, required=False)
    groups = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all(), many=True, required=False)
    cloud_init = serializers.BooleanField(required=False)
    login_user = serializers.CharField(required=False, allow_blank=True, max_length=32)
    is_default = serializers.BooleanField(required=False, help_text="Administrators only.")


class ImageImportSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=list(SOURCES),
                                     help_text="`upload` (a finished upload of yours), `url` (http/https) or "
                                               "`path` (administrators: a file inside the import directories).")
    upload = serializers.UUIDField(required=False, help_text="The upload's id (source `upload`).")
    url = serializers.CharField(required=False, max_length=2000, help_text="source `url`.")
    path = serializers.CharField(required=False, max_length=1000, help_text="source `path`.")
    sha256 = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                   help_text="Expected SHA-256 of the file as given (checked before anything else).")
    name = serializers.CharField(max_length=60)
    title = serializers.CharField(required=False, allow_blank=True, max_length=100)
    format = serializers.ChoiceField(choices=[*FORMATS, *CONTAINERS], required=False,
                                     help_text="What you say the file is; refused if it is something else.")
    kind = serializers.ChoiceField(choices=Image.Kind.choices, required=False,
                                   help_text="Default: iso for ISO files, template for OVA, disk otherwise.")
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, required=False,
                                         help_text="Default: private for your own images, public for the library.")
    groups = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all(), many=True, required=False)
    owner = serializers.SlugRelatedField(slug_field="username", queryset=Group.objects.none(), required=False,
                                         allow_null=True,
                                         help_text="Administrators: import into this user's space (default: the library).")
    description = serializers.CharField(required=False, allow_blank=True)
    os_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    cloud_init = serializers.BooleanField(required=False, default=False)
    login_user = serializers.CharField(required=False, allow_blank=True, max_length=32, default="")
    min_disk_gib = serializers.IntegerField(required=False, min_value=1, default=1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from django.contrib.auth import get_user_model  # the user model is known once apps are loaded

        self.fields["owner"].queryset = get_user_model().objects.all()  # type: ignore[attr-defined]


class ImageImportResultSerializer(serializers.Serializer):
    """What an import answers: a message and the job that does it (follow it at `job.url`)."""

    message = serializers.CharField()
    job = JobSummarySerializer()

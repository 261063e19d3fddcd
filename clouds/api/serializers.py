"""Shapes of the clouds API. The secret is write-only: no response ever carries it (nor its encrypted form)."""

from __future__ import annotations

from rest_framework import serializers

from clouds.models import Cloud

READ_FIELDS = ["id", "name", "description", "auth_type", "clouds_yaml_name", "auth_url", "username",
               "user_domain_name", "project_name", "project_domain_name", "application_credential_id",
               "region_name", "image_endpoint", "network_endpoint", "verify_tls", "ca_file", "secret_env",
               "has_secret", "secret_source", "last_check_at", "last_check_ok", "last_check_message", "created_at"]


class CloudSerializer(serializers.ModelSerializer):
    has_secret = serializers.BooleanField(read_only=True)
    secret_source = serializers.SerializerMethodField(
        help_text="Where the secret comes from: stored (encrypted), environment (secret_env), or none.")

    class Meta:
        model = Cloud
        fields = READ_FIELDS
        read_only_fields = READ_FIELDS

    def get_secret_source(self, obj: Cloud) -> str:
        return "environment" if obj.secret_env else "stored" if obj.secret_encrypted else "none"


class CloudWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=40, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    auth_type = serializers.ChoiceField(choices=Cloud.Auth.choices, required=False)
    clouds_yaml_name = serializers.CharField(max_length=64, required=False, allow_blank=True)
    auth_url = serializers.CharField(max_length=300, required=False, allow_blank=True)
    username = serializers.CharField(max_length=100, required=False, allow_blank=True)
    user_domain_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    project_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    project_domain_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    application_credential_id = serializers.CharField(max_length=100, required=False, allow_blank=True)
    region_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    image_endpoint = serializers.CharField(max_length=300, required=False, allow_blank=True)
    network_endpoint = serializers.CharField(max_length=300, required=False, allow_blank=True)
    verify_tls = serializers.BooleanField(required=False)
    ca_file = serializers.CharField(max_length=300, required=False, allow_blank=True)
    secret_env = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                       help_text="The environment variable of the portal's processes that holds "
                                                 "the secret (instead of storing it).")
    secret = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=False,
                                   style={"input_type": "password"},
                                   help_text="The password or application credential secret: stored encrypted, "
                                             "never returned. Omit it to keep the stored one.")
    clear_secret = serializers.BooleanField(required=False, write_only=True,
                                            help_text="Remove the stored secret (changes only).")


class CheckResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    services = serializers.DictField(child=serializers.CharField(),
                                     help_text="Per service (glance, neutron): \"ok\" or what went wrong.")
    cloud = CloudSerializer()

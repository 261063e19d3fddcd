"""OpenStack clouds the portal is connected to, and what came from or went to them.

Rows change only in clouds.services (and the Glance/Neutron modules beside it)."""

from __future__ import annotations

from django.db import models


class Cloud(models.Model):
    """A connection to an OpenStack cloud (openstacksdk): Glance for images, Neutron for networks."""

    class Auth(models.TextChoices):
        PASSWORD = "password", "Keystone password"
        APPLICATION_CREDENTIAL = "v3applicationcredential", "Keystone application credential"
        NONE = "none", "No Keystone (endpoints given directly)"
        CLOUDS_YAML = "clouds_yaml", "An entry of clouds.yaml"

    name = models.SlugField(max_length=40, unique=True)
    description = models.CharField(max_length=200, blank=True)
    auth_type = models.CharField(max_length=24, choices=Auth.choices, default=Auth.PASSWORD)
    clouds_yaml_name = models.CharField("clouds.yaml entry", max_length=64, blank=True,
                                        help_text="With 'An entry of clouds.yaml': the cloud's name in the file.")
    auth_url = models.CharField("Keystone URL", max_length=300, blank=True,
                                help_text="e.g. https://keystone.example.org:5000/v3")
    username = models.CharField(max_length=100, blank=True)
    user_domain_name = models.CharField(max_length=100, blank=True, default="Default")
    project_name = models.CharField(max_length=100, blank=True)
    project_domain_name = models.CharField(max_length=100, blank=True, default="Default")
    application_credential_id = models.CharField(max_length=100, blank=True)
    region_name = models.CharField(max_length=100, blank=True)
    image_endpoint = models.CharField("Glance endpoint", max_length=300, blank=True,
                                      help_text="Without Keystone: Glance's URL. Otherwise it overrides the catalog.")
    network_endpoint = models.CharField("Neutron endpoint", max_length=300, blank=True,
                                        help_text="Without Keystone: Neutron's URL. Otherwise it overrides the catalog.")
    verify_tls = models.BooleanField("verify TLS certificates", default=True)
    ca_file = models.CharField("CA bundle", max_length=300, blank=True,
                               help_text="A CA bundle on the portal server for the cloud's certificates.")
    secret_encrypted = models.TextField(blank=True, editable=False)
    secret_env = models.CharField("secret from environment variable", max_length=64, blank=True,
                                  help_text="Instead of storing it: the variable that holds the password or secret.")
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True, blank=True)
    last_check_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "OpenStack cloud"

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted or self.secret_env)


class GlanceImport(models.Model):
    """A Glance image imported into the portal: which portal image it became (re-imports find it)."""

    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="glance_imports")
    glance_id = models.CharField(max_length=64)
    glance_name = models.CharField(max_length=255, blank=True)
    os_hash_algo = models.CharField(max_length=16, blank=True)
    os_hash_value = models.CharField(max_length=128, blank=True)
    image = models.ForeignKey("storage.Image", null=True, blank=True, on_delete=models.CASCADE,
                              related_name="glance_imports")
    job = models.ForeignKey("portal.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "image imported from Glance"
        indexes = [models.Index(fields=["cloud", "glance_id"], name="glance_import_lookup")]

    def __str__(self) -> str:
        return f"{self.cloud.name}: {self.glance_name or self.glance_id}"


class GlancePublication(models.Model):
    """A portal image published to a cloud's Glance."""

    class Status(models.TextChoices):
        UPLOADING = "uploading", "Uploading"
        ACTIVE = "active", "Published"
        FAILED = "failed", "Failed"

    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="glance_publications")
    image = models.ForeignKey("storage.Image", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="glance_publications")
    image_name = models.CharField(max_length=100)
    glance_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UPLOADING)
    os_hash_value = models.CharField(max_length=128, blank=True)
    job = models.ForeignKey("portal.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "image published to Glance"

    def __str__(self) -> str:
        return f"{self.image_name} → {self.cloud.name}"


class NeutronLink(models.Model):
    """A portal network that mirrors a Neutron network (and the subnet it takes its addresses from)."""

    class State(models.TextChoices):
        IN_SYNC = "in_sync", "In sync"
        DIFFERS = "differs", "Differs from Neutron"
        GONE = "gone", "Deleted in Neutron"

    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="neutron_links")
    network = models.OneToOneField("networks.Network", on_delete=models.CASCADE, related_name="neutron_link")
    neutron_network_id = models.CharField(max_length=64)
    neutron_subnet_id = models.CharField(max_length=64, blank=True)
    neutron_name = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.IN_SYNC)
    differences = models.JSONField(default=list, blank=True)
    notes = models.JSONField(default=list, blank=True,
                             help_text="What of the Neutron network could not be mirrored exactly (said on import).")
    synced_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cloud", "network__name"]
        verbose_name = "network mirrored from Neutron"
        verbose_name_plural = "networks mirrored from Neutron"
        constraints = [models.UniqueConstraint(fields=["cloud", "neutron_network_id"], name="neutron_link_unique")]

    def __str__(self) -> str:
        return f"{self.network.name} ↔ {self.cloud.name}:{self.neutron_name or self.neutron_network_id}"

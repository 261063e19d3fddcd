"""What a user keeps with their account: SSH public keys, put into their VMs by cloud-init.

Rows are written only by accounts.services, after accounts.validation has parsed the key; every
column but `name` is derived from the key, so `public_key` is always one normalized line
("type base64 [comment]") that can go into an authorized_keys file as it is.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.choices import Via

from .validation import KEY_TYPES


class SSHKey(models.Model):
    """One SSH public key of one user."""

    class KeyType(models.TextChoices):
        ED25519 = "ssh-ed25519", "ED25519"
        ECDSA_256 = "ecdsa-sha2-nistp256", "ECDSA (P-256)"
        ECDSA_384 = "ecdsa-sha2-nistp384", "ECDSA (P-384)"
        ECDSA_521 = "ecdsa-sha2-nistp521", "ECDSA (P-521)"
        RSA = "ssh-rsa", "RSA"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=60)
    public_key = models.TextField(help_text='One line: "type base64 [comment]".')
    key_type = models.CharField("type", max_length=32, choices=KeyType.choices)
    bits = models.PositiveIntegerField()
    fingerprint = models.CharField(max_length=64, help_text="SHA256 of the key, as `ssh-keygen -l` prints it.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_via = models.CharField(max_length=16, choices=Via.choices, default=Via.WEB)

    class Meta:
        verbose_name = "SSH key"
        ordering = ["created_at", "id"]  # oldest first: the order of authorized_keys
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="sshkey_unique_name_per_user"),
            models.UniqueConstraint(fields=["user", "fingerprint"], name="sshkey_unique_key_per_user"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def type_name(self) -> str:
        """The type as `ssh-keygen -l` names it: ED25519, ECDSA or RSA."""
        return KEY_TYPES.get(self.key_type, self.key_type)

    @property
    def label(self) -> str:
        """Type and size as `ssh-keygen -l` shows them: "ED25519 256", "ECDSA 384", "RSA 4096"."""
        return f"{self.type_name} {self.bits}"

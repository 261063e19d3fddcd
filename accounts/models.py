"""What a user keeps with their account: SSH public keys, put into their VMs by cloud-init.

Rows are written only by accounts.services, after accounts.validation has parsed the key; every
column but `name` is derived from the key, so `public_key` is always one normalized line
("type base64 [comment]") that can go into an authorized_keys file as it is.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.choices import Via


class SSHKey(models.Model):
    """One SSH public key of one user."""

    class KeyType(models.TextChoices):
        ED25519 = "ssh-ed25519", "ED25519"
        ECDSA_256 = "ecdsa-sha2-nistp256", "ECDSA"
        ECDSA_384 = "ecdsa-sha2-nistp384", "ECDSA"
        ECDSA_521 = "ecdsa-sha2-nistp521", "ECDSA"
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
    def label(self) -> str:
        """Type and size as `ssh-keygen -l` shows them: "ED25519 256", "ECDSA 384", "RSA 4096"."""
        return f"{self.get_key_type_display()} {self.bits}"

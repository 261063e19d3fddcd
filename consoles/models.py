"""Console tickets, sessions, share links and each VM's console settings.

Secrets that grant access (tickets, share links) are stored as SHA-256 hashes only: the plain token
exists in the browser that asked for it and nowhere else.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.choices import Via
from vms.choices import VMStatus

from .choices import ConsoleKind, ConsoleTier, SerialSharing, SessionRole

# A share (or link) to a VM in one of these states has ended: the VM is gone or going.
VM_GONE_STATES = (VMStatus.DELETING, VMStatus.DELETED)


class ConsoleSettings(models.Model):
    """Per-VM console secrets and the owner's choices; created on first use."""

    vm = models.OneToOneField("vms.VM", on_delete=models.CASCADE, related_name="console_settings")
    # VNC authentication (DES challenge) uses at most 8 characters. Only the relay knows it: the
    # browser is offered "no authentication" by the relay, which answers QEMU's challenge itself.
    vnc_password = models.CharField(max_length=8)
    serial_sharing = models.CharField(max_length=16, choices=SerialSharing.choices, default=SerialSharing.REFUSE)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "console settings"
        verbose_name_plural = "console settings"

    def __str__(self) -> str:
        return f"Console settings of {self.vm}"


class ConsoleShare(models.Model):
    """An expiring, revocable, view-only link to a VM's screen for one colleague."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="console_shares")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                   related_name="console_shares_created")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                  related_name="console_shares_received")
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    last_used_at = models.DateTimeField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Share of {self.vm} with {self.recipient}"

    @property
    def vm_gone(self) -> bool:
        """The shared VM is deleted or being deleted: the share has ended for good."""
        return self.vm.status in VM_GONE_STATES

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now() and not self.vm_gone

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.vm_gone:
            return "ended"
        return "active" if self.expires_at > timezone.now() else "expired"


class ConsoleTicket(models.Model):
    """A single-use permission to open one console, bound to user, VM, kind and browser session."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_tickets")
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="console_tickets")
    kind = models.CharField(max_length=8, choices=ConsoleKind.choices)
    session_key = models.CharField(max_length=40, blank=True)
    share = models.ForeignKey(ConsoleShare, null=True, blank=True, on_delete=models.CASCADE, related_name="tickets")
    view_only = models.BooleanField(default=False)
    via = models.CharField(max_length=16, choices=Via.choices, default=Via.WEB)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"{self.kind} ticket for {self.vm} ({self.user})"


class ConsoleSession(models.Model):
    """One open (or finished) console connection: who, which VM, which relay, how long."""

    ticket = models.OneToOneField(ConsoleTicket, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="session")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_sessions")
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="console_sessions")
    kind = models.CharField(max_length=8, choices=ConsoleKind.choices)
    tier = models.CharField(max_length=16, choices=ConsoleTier.choices)
    role = models.CharField(max_length=8, choices=SessionRole.choices, default=SessionRole.CONTROL)
    share = models.ForeignKey(ConsoleShare, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="sessions")
    client = models.CharField(max_length=100, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_seen_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Set by an administrator (or a revocation) to end the session at its next check.
    terminate_requested_at = models.DateTimeField(null=True, blank=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)
    bytes_to_guest = models.BigIntegerField(default=0)
    bytes_from_guest = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["vm", "kind", "closed_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.vm} by {self.user} ({self.tier})"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def duration_seconds(self) -> float:
        end = self.closed_at or timezone.now()
        return max(0.0, (end - self.opened_at).total_seconds())


class ConsoleLink(models.Model):
    """A one-time, short-lived link to a VM's console page for one portal user (Slack, API, CLI hand it out).

    Only the SHA-256 of the token is stored. The table keeps the name it had in chatops.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, default="screen")  # the page: "screen" or "terminal"
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "chatops_consolelink"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"console link to {self.vm_id} for {self.user_id} ({'used' if self.used_at else 'open'})"

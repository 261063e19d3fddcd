"""Idempotent seeding: the default host, its pool, the demo image, flavors, an admin and a demo user."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from cluster.hostconfig import host_uri_check
from cluster.models import Host
from cluster.services import host_probe_kvm, host_register
from portal.choices import Via
from portal.exceptions import PortalError
from quotas.models import Quota
from quotas.services import quota_set
from storage.models import Image
from storage.selectors import image_probe_boot
from storage.services import image_register
from vms.models import Flavor

FLAVORS = [
    ("tiny", 1, 128, 1, "Smallest useful VM"),
    ("small", 1, 256, 2, "Light services"),
    ("medium", 2, 512, 4, "Builds and tests"),
    ("large", 2, 1024, 8, "Heavier workloads"),
]
DEMO_QUOTA = {"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 1536, "max_disk_gib": 20}


class Command(BaseCommand):
    help = "Create or update the default host, demo image, flavors and the admin and demo users."

    def add_arguments(self, parser):
        parser.add_argument("--no-probe", action="store_true", help="Skip the KVM boot probe.")
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args, no_probe=False, quiet=False, **options):
        out = (lambda msg: None) if quiet else (lambda msg: self.stdout.write(msg))
        # A host already registered with this URI keeps its name (host_register updates by URI): only a new one is "local".
        known = Host.objects.filter(uri=host_uri_check(settings.LIBVIRT_URI)).values_list("name", flat=True).first()
        host = host_register(actor=None, via=Via.CLI, name=known or "local", uri=settings.LIBVIRT_URI,
                             domain_type=settings.DOMAIN_TYPE)
        out(f"Host {host.name}: {host.uri} is {host.status}"
            + (f" ({host.last_error})" if host.last_error else f", libvirt {host.libvirt_version}"))
        for name, vcpus, mem, disk, desc in FLAVORS:
            Flavor.objects.get_or_create(name=name, defaults={"vcpus": vcpus, "memory_mib": mem, "disk_gib": disk,
                                                              "description": desc})
        image = self._demo_image(host, out)
        if image is not None and host.status == "up" and host.domain_type == "auto" and not no_probe \
                and host.kvm_boots_guests is None and not host.uri.startswith("test:"):
            out("Probing whether KVM boots a Linux guest on this host (once; up to 15 s)…")
            host_probe_kvm(host=host, boot=image_probe_boot())
            host.refresh_from_db()
        out(f"Guests on {host.name} run as domain type '{host.effective_domain_type}'"
            f" (setting: {host.domain_type}, KVM boots guests: {host.kvm_boots_guests})")
        self._users(out)

    def _demo_image(self, host, out):

        guest = Path(settings.GUEST_DIR)
        root, kernel, initrd = guest / "root.qcow2", guest / "vmlinuz", guest / "initrd.gz"
        if not (root.exists() and kernel.exists() and initrd.exists()):
            out(f"No demo guest in {guest}: run scripts/build-guest.sh")
            return None
        manifest = guest / "manifest.json"
        stamp = hashlib.sha256(manifest.read_bytes() if manifest.exists() else b"").hexdigest()[:8]
        image = Image.objects.filter(name="demo").first()
        if image and image.description.endswith(f"[{stamp}]"):
            return image
        if image and image.volumes.exists():
            return image  # in use: keep it
        if host.status != "up":
            return image
        try:
            image = image_register(
                actor=None, via=Via.CLI, host=host, name="demo", title="Tiny Linux (demo)",
                description=("A Debian kernel with a busybox userland: serial and screen shell, ACPI power-off, "
                             f"root on a qcow2 disk. [{stamp}]"),
                os_name="Linux (busybox)", source_path=str(root), fmt="qcow2", boot_mode=Image.BootMode.KERNEL,
                kernel_path=str(kernel), initrd_path=str(initrd),
                cmdline="console=tty0 console=ttyS0,115200 portalroot=/dev/vda portalhost={hostname}",
                ready_marker="PORTAL GUEST READY", is_default=True, replace=True)
        except PortalError as exc:
            out(f"Could not register the demo image: {exc.message}")
            return None
        out(f"Registered the demo image ({image.path})")
        return image

    def _users(self, out):
        User = get_user_model()
        cred_file = Path(settings.DATA_DIR) / "credentials.json"
        creds = json.loads(cred_file.read_text()) if cred_file.exists() else {}
        for username, staff in (("admin", True), ("demo", False)):
            password = os.environ.get(f"PORTAL_{username.upper()}_PASSWORD") or creds.get(username) \
                or secrets.token_urlsafe(9)
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User.objects.create_user(username=username, password=password, is_staff=staff,
                                                is_superuser=staff, email=f"{username}@localhost")
            elif not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
            creds[username] = password
            if not staff and not Quota.objects.filter(user=user).exists():
                quota_set(actor=None, via=Via.CLI, user=user, **DEMO_QUOTA)  # audited, as every quota change
        cred_file.parent.mkdir(parents=True, exist_ok=True)
        cred_file.write_text(json.dumps(creds, indent=2))
        os.chmod(cred_file, 0o600)
        out("")
        out(f"Logins (kept in {cred_file}):")
        out(f"  admin / {creds['admin']}   (portal and /admin/)")
        out(f"  demo  / {creds['demo']}   (quota: 3 VMs, 4 vCPUs, 1536 MiB, 20 GiB)")

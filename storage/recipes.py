"""Images the portal can build itself: which script makes the files, and how the image is registered.

A recipe is data: `storage.services.image_build` queues a job for one, and the `image.build` job
handler (storage.jobs) runs its script and registers what it made. The busybox demo guest is not a
recipe: set-up builds and registers it (scripts/setup.sh, `manage.py setup_portal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class Recipe:
    """How to build one image and what to register it as."""

    name: str  # the image's name, and the recipe's
    label: str  # short, for buttons: "Build <label> image"
    title: str
    description: str
    os_name: str
    script: str  # relative to the project directory; takes OUTDIR as its only argument
    outdir_setting: str  # name of the setting holding OUTDIR
    disk_file: str
    kernel_file: str
    initrd_file: str
    cmdline: str
    cloud_init: bool
    login_user: str
    min_disk_gib: int
    step_prefix: str  # the script's progress lines: "<prefix> step N/M: what"

    @property
    def script_path(self) -> Path:
        return Path(settings.BASE_DIR) / self.script

    @property
    def outdir(self) -> Path:
        return Path(getattr(settings, self.outdir_setting))


RECIPES: dict[str, Recipe] = {
    "debian-12": Recipe(
        name="debian-12",
        label="Debian 12",
        title="Debian 12 (cloud-init)",
        description=("Debian 12 (bookworm) with systemd, OpenSSH and cloud-init, built from Debian's packages. "
                     "Log in over SSH as 'debian' with your key; sudo without a password."),
        os_name="Debian 12",
        script="scripts/build-debian-image.sh",
        outdir_setting="DEBIAN_IMAGE_DIR",
        disk_file="debian-12.qcow2",
        kernel_file="vmlinuz",
        initrd_file="initrd.img",
        cmdline="root=/dev/vda rw console=ttyS0",
        cloud_init=True,
        login_user="debian",
        min_disk_gib=3,
        step_prefix="[build-debian]",
    ),
}

"""Glance images from the command line, through clouds.glance (administrators).

`manage.py glance --user NAME images <cloud>`, `import <cloud> <glance-id> [--name N] [--domain D]
[--visibility V] [--wait]`, `publish <cloud> <image> [--name N] [--visibility V] [--wait]`.
Errors go to stderr with the exit status of their kind (README.md, "Command line").
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from clouds import glance
from portal.choices import JobStatus, Via
from portal.cli import VerbCommand
from portal.jobs import job_wait
from storage.selectors import image_get

WORKER_GRACE_SECONDS = 5.0


def _size(n: Any) -> str:
    return "-" if n in (None, "") else f"{int(n) / 1024**2:.1f} MiB"


class Command(VerbCommand):
    help = "Glance images of a cloud: list, import into the portal, publish portal images (administrators)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", default=None, help="Act as this portal user (an administrator; default: the "
                                                         "system itself).")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("images", help="The cloud's Glance images and their properties.").add_argument("cloud")
        imp = sub.add_parser("import", help="Import a Glance image (idempotent).")
        imp.add_argument("cloud")
        imp.add_argument("glance_id")
        imp.add_argument("--name", default=None, help="Portal image name (default: from the Glance name).")
        imp.add_argument("--domain", default=None, help="Storage domain to store it in (default: the host's pool).")
        imp.add_argument("--visibility", default=None, choices=["public", "group", "private"])
        imp.add_argument("--wait", action="store_true", help="Follow the job to its end.")
        pub = sub.add_parser("publish", help="Publish a portal image or template to Glance.")
        pub.add_argument("cloud")
        pub.add_argument("image", help="Portal image name or id.")
        pub.add_argument("--name", default=None, help="Glance image name (default: the portal name).")
        pub.add_argument("--visibility", default="private", choices=list(glance.GLANCE_VISIBILITY))
        pub.add_argument("--wait", action="store_true", help="Follow the job to its end.")

    def run_verb(self, actor: Any, verb: str, opts: dict[str, Any]) -> None:
        cloud = glance.cloud_find(actor=actor, key=opts["cloud"])
        getattr(self, f"_{verb}")(actor, cloud, opts)

    def _images(self, actor: Any, cloud: Any, opts: dict) -> None:
        rows = glance.glance_images(actor=actor, cloud=cloud)
        if not rows:
            self.stdout.write(f"Cloud {cloud.name} has no Glance images.")
            return
        self.stdout.write(f"{'ID':36}  {'NAME':24} {'STATUS':8} {'FORMAT':12} {'SIZE':>11} {'VISIBILITY':10} "
                          "SHA-512 (os_hash_value)  IMPORTED AS")
        for r in rows:
            fmt = f"{r['disk_format']}/{r['container_format']}"
            imported = r["imported_as"]["name"] if r["imported_as"] else ("-" if r["importable"] else "refused")
            self.stdout.write(f"{r['id']:36}  {r['name'][:24]:24} {r['status']:8} {fmt:12} {_size(r['size']):>11} "
                              f"{r['visibility']:10} {(r['os_hash_value'] or '-')[:22]:23}  {imported}")

    def _follow(self, job: Any, wait: bool) -> None:
        self.stdout.write(f"Job {job.pk} ({job.kind}) queued.")
        if not wait:
            return
        job = job_wait(job, write=self.stdout.write, grace_seconds=WORKER_GRACE_SECONDS)
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(f"The job {job.status}: {job.error}", returncode=1)
        result = job.result or {}
        self.stdout.write(str(result.get("message") or ", ".join(f"{k}={v}" for k, v in result.items()
                                                                  if k in ("image", "glance_id", "os_hash_value"))))

    def _import(self, actor: Any, cloud: Any, opts: dict) -> None:
        result = glance.glance_import(actor=actor, via=Via.CLI, cloud=cloud, glance_id=opts["glance_id"],
                                      name=opts["name"], storage_domain=opts["domain"],
                                      visibility=opts["visibility"])
        if result.image is not None:
            self.stdout.write(f"Already imported as image {result.image.name} (id {result.image.pk}).")
            return
        if not result.created:
            self.stdout.write("An import of this Glance image is running already.")
        self._follow(result.job, opts["wait"])

    def _publish(self, actor: Any, cloud: Any, opts: dict) -> None:
        image = image_get(user=actor, name_or_id=opts["image"])  # the system (no --user) sees every image
        job = glance.glance_publish(actor=actor, via=Via.CLI, cloud=cloud, image=image, name=opts["name"],
                                    visibility=opts["visibility"])
        self._follow(job, opts["wait"])

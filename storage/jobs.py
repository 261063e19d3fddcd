"""Act phase of storage work: the `image.build` job runs a recipe's build script and registers the image;
the `image.import` job (storage.imports) fetches, checks, converts and stores an uploaded, downloaded or
host file.

The handler is idempotent: an image registered already is left alone, and the build scripts are
stamped (a second run exits at once) and locked per output folder (a retry after a lost worker
waits for the first run, then finds the image built).
"""

from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from django.conf import settings

from cluster.models import Host
from portal.exceptions import NotFound, PortalError, ValidationFailed
from portal.jobs import JobContext, job_handler
from portal.models import Job

from .imports import IMAGE_IMPORT, image_import_run, remove_unlisted_volumes
from .models import Image, StoragePool
from .recipes import RECIPES, Recipe
from .services import IMAGE_BUILD, image_register
from .uploads import upload_finish

STEP_RE = re.compile(r"step (\d+)/(\d+): (.*)")
BUILD_FIRST, BUILD_LAST = 2, 90  # progress (%) the script's steps are spread over


def _run_script(ctx: JobContext, recipe: Recipe) -> None:
    """Run the recipe's script, turning its "step N/M" lines into job progress and its other lines into
    the job's log (the scripts keep the chatter of debootstrap and apt in their own log files). A script
    that fails or runs past IMAGE_BUILD_TIMEOUT_SECONDS fails the job with its last lines for
    administrators."""
    script = recipe.script_path
    if not os.access(script, os.X_OK):
        raise PortalError(f"The build script for {recipe.name} is missing.", detail=str(script))
    ctx.progress(BUILD_FIRST, f"Building {recipe.name} (running {recipe.script})")
    # Its own session, so a timeout ends the script's whole process group (debootstrap, apt, chroot).
    proc = subprocess.Popen([str(script), str(recipe.outdir)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    timeout = settings.IMAGE_BUILD_TIMEOUT_SECONDS
    timed_out = threading.Event()

    def kill_when_late() -> None:
        if proc.poll() is None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGTERM)  # the script's trap unmounts what it mounted
            time.sleep(10)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill_when_late)
    timer.daemon = True
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    step = ""
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            text = line.removeprefix(recipe.step_prefix).strip()
            if match := STEP_RE.match(text):
                n, m, step = int(match[1]), int(match[2]), match[3]
                percent = BUILD_FIRST + (BUILD_LAST - BUILD_FIRST) * (n - 1) // max(m, 1)
                ctx.progress(percent, f"Building {recipe.name}, step {n} of {m}: {step}")
            else:
                ctx.log(text)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # the job itself failed while reading: leave nothing running
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    if timed_out.is_set():
        raise PortalError(f"Building {recipe.name} took longer than {timeout} s and was stopped.",
                          detail="\n".join(tail))
    if rc != 0:
        where = f" at “{step}”" if step else ""
        raise PortalError(f"Building {recipe.name} failed{where} (exit status {rc}); "
                          "an administrator can see the script's last lines in the job.",
                          detail="\n".join(tail))


@job_handler(IMAGE_BUILD)
def build(ctx: JobContext) -> dict:
    recipe = RECIPES.get(ctx.params.get("recipe", ""))
    if recipe is None:
        raise ValidationFailed(f"No image recipe {ctx.params.get('recipe')!r}.", field="recipe")
    existing = Image.objects.filter(name=recipe.name).select_related("pool__host").first()
    if existing is not None:
        ctx.progress(100, f"Image {recipe.name} is registered already (host {existing.pool.host.name}); "
                          "nothing to do")
        return {"image": recipe.name, "image_id": existing.pk, "already_registered": True}
    host = Host.objects.filter(pk=int(ctx.params.get("host_id") or 0)).first()
    if host is None:
        raise NotFound("The host chosen for the image is gone; start the build again.")
    _run_script(ctx, recipe)
    outdir = recipe.outdir
    ctx.progress(BUILD_LAST + 2, f"Copying {recipe.disk_file} into the storage pool of {host.name}")
    try:
        image = image_register(
            actor=ctx.job.actor, via=ctx.job.via, host=host, name=recipe.name, title=recipe.title,
            description=recipe.description, os_name=recipe.os_name, source_path=str(outdir / recipe.disk_file),
            fmt="qcow2", boot_mode=Image.BootMode.KERNEL, kernel_path=str(outdir / recipe.kernel_file),
            initrd_path=str(outdir / recipe.initrd_file), cmdline=recipe.cmdline, cloud_init=recipe.cloud_init,
            login_user=recipe.login_user, min_disk_gib=recipe.min_disk_gib, is_default=False)
    except ValidationFailed:
        # Registered in the meantime by a concurrent build for another host: that is the outcome wanted.
        existing = Image.objects.filter(name=recipe.name).first()
        if existing is None:
            raise
        return {"image": recipe.name, "image_id": existing.pk, "already_registered": True}
    ctx.progress(99, f"Registered image {image.name} on {host.name}")
    return {"image": image.name, "image_id": image.pk, "host": host.name, "size_bytes": image.size_bytes}


def _import_abandoned(job: Job, error: str) -> None:
    """An import that failed, whatever the error, or whose worker died: its staging files go, the volumes
    it recorded are removed unless a row names them, and its upload is released (never left
    "importing")."""
    for path in glob.glob(os.path.join(settings.IMAGE_STAGING_DIR, f"import-{job.pk}-*")):
        shutil.rmtree(path, ignore_errors=True)
    volumes = []
    for pool_id, volume in job.params.get("volumes") or []:
        pool = StoragePool.objects.filter(pk=pool_id).select_related("host").first()
        if pool is not None:
            volumes.append((pool, str(volume)))
    remove_unlisted_volumes(None, volumes)
    if job.params.get("upload_id"):
        upload_finish(upload_id=job.params["upload_id"], imported=False)


@job_handler(IMAGE_IMPORT, on_failure=_import_abandoned)
def import_image(ctx: JobContext) -> dict:
    return image_import_run(ctx)

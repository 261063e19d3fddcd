"""Images the portal builds itself: the image_build service, the image.build job, the admin button and
`manage.py image_build`.

The real Debian 12 build (scripts/build-debian-image.sh) is run by `scripts/setup.sh --test` before the
suite; its stamp makes the script exit at once here, so the qemu test registers the real image without
building it. The other tests run a small stand-in script through the same job (a recipe of their own).
"""

from __future__ import annotations

import os
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages import constants as levels
from django.core.management import CommandError, call_command
from django.urls import reverse

from portal.choices import JobStatus, Via
from portal.exceptions import Conflict, PermissionDenied, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from storage.models import Image
from storage.recipes import RECIPES, Recipe
from storage.services import IMAGE_BUILD, image_build

GIB = 1024**3

STAND_IN = """#!/bin/sh
# A stand-in build script: the progress lines of the real ones, then the files a recipe registers.
set -e
echo "[build-fake] step 1/3: first things" >&2
echo "[build-fake] a remark" >&2
echo "[build-fake] step 2/3: making the disk" >&2
{fail}
qemu-img create -q -f qcow2 "$1/disk.qcow2" 64M
echo kernel > "$1/vmlinuz"
echo initrd > "$1/initrd.img"
echo "[build-fake] step 3/3: done" >&2
"""


@pytest.fixture
def fake_recipe(tmp_path, settings, monkeypatch):
    """A recipe `fake-os` whose script writes a tiny qcow2 (or fails in step 2 when told to)."""

    def make(*, fail: bool = False) -> Recipe:
        script = tmp_path / "build-fake.sh"
        script.write_text(STAND_IN.format(fail='echo "disk full" >&2; exit 3' if fail else ""))
        script.chmod(0o755)
        settings.FAKE_IMAGE_DIR = str(tmp_path / "out")
        os.makedirs(settings.FAKE_IMAGE_DIR, exist_ok=True)
        recipe = Recipe(name="fake-os", label="Fake OS", title="Fake OS (cloud-init)", description="A stand-in.",
                        os_name="Fake", script=str(script), outdir_setting="FAKE_IMAGE_DIR",
                        disk_file="disk.qcow2", kernel_file="vmlinuz", initrd_file="initrd.img",
                        cmdline="root=/dev/vda rw console=ttyS0", cloud_init=True, login_user="fake",
                        min_disk_gib=2, step_prefix="[build-fake]")
        monkeypatch.setitem(RECIPES, recipe.name, recipe)
        return recipe

    return make


def _running_build(**params) -> Job:
    return Job.objects.create(kind=IMAGE_BUILD, status=JobStatus.RUNNING, params={"recipe": "debian-12", **params})


# --- the service -------------------------------------------------------------------------------------

def test_only_administrators_build_images(db, test_host, alice):
    for who in (alice, AnonymousUser()):
        with pytest.raises(PermissionDenied, match="Only administrators build images"):
            image_build(actor=who, via=Via.WEB)
    assert not Job.objects.filter(kind=IMAGE_BUILD).exists()


def test_a_second_build_is_refused_while_one_is_queued_or_running(db, test_host, admin_user):
    first = _running_build()
    with pytest.raises(Conflict, match=f"An image build is already running \\(job {first.pk}\\)") as refused:
        image_build(actor=admin_user, via=Via.ADMIN)
    assert refused.value.fields["job"] == str(first.pk)
    Job.objects.filter(pk=first.pk).update(status=JobStatus.PENDING)
    with pytest.raises(Conflict, match="already pending"):
        image_build(actor=admin_user, via=Via.CLI)
    assert Job.objects.filter(kind=IMAGE_BUILD).count() == 1

    # Once it has finished, the next build is queued (on the first enabled host), and audited.
    Job.objects.filter(pk=first.pk).update(status=JobStatus.FAILED)
    job = image_build(actor=admin_user, via=Via.ADMIN)
    assert (job.kind, job.status, job.params) == (IMAGE_BUILD, JobStatus.PENDING,
                                                  {"recipe": "debian-12", "host_id": test_host.pk})
    assert (job.target_type, job.target_name) == ("host", test_host.name)
    event = AuditEvent.objects.get(action=IMAGE_BUILD)
    assert (event.actor, event.via, event.job_id) == (admin_user, Via.ADMIN, job.pk)


def test_unknown_recipes_and_no_enabled_host_are_refused(db, test_host, admin_user):
    with pytest.raises(ValidationFailed, match="No image recipe 'windows'; known: debian-12") as bad:
        image_build(actor=admin_user, via=Via.CLI, recipe="windows")
    assert bad.value.errors == {"recipe": [bad.value.message]}
    type(test_host).objects.update(enabled=False)
    with pytest.raises(Conflict, match="no enabled host"):
        image_build(actor=admin_user, via=Via.CLI)


# --- the job (a stand-in script on the test driver) ----------------------------------------------------

def test_the_job_shows_the_script_steps_and_registers_the_image(transactional_db, test_host, admin_user,
                                                                fake_recipe):
    recipe = fake_recipe()
    job = image_build(actor=admin_user, via=Via.ADMIN, recipe="fake-os")  # the test backend runs it at once
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert "Building fake-os, step 1 of 3: first things" in job.log
    assert "Building fake-os, step 3 of 3: done" in job.log
    assert "a remark" in job.log
    image = Image.objects.get(name="fake-os")
    assert job.result == {"image": "fake-os", "image_id": image.pk, "host": test_host.name,
                          "size_bytes": image.size_bytes}
    out = recipe.outdir
    assert (image.title, image.boot_mode, image.kernel_path, image.initrd_path, image.cmdline) == (
        "Fake OS (cloud-init)", "kernel", str(out / "vmlinuz"), str(out / "initrd.img"), "root=/dev/vda rw console=ttyS0")
    assert (image.cloud_init, image.login_user, image.min_disk_gib, image.is_default) == (True, "fake", 2, False)
    info = get_driver(test_host.uri).volume_info(pool=image.pool.name, name=image.volume_name)
    assert info.path == image.path
    assert image.pool.host == test_host
    assert AuditEvent.objects.get(action="image.register", target_id=str(image.pk)).actor == admin_user
    # The API tells users how to log in (storage.api)
    from storage.api.serializers import ImageSerializer

    assert {k: ImageSerializer(image).data[k] for k in ("cloud_init", "login_user")} == {
        "cloud_init": True, "login_user": "fake"}

    # Again: registered already, so nothing is built or copied.
    again = image_build(actor=admin_user, via=Via.ADMIN, recipe="fake-os")
    again.refresh_from_db()
    assert again.status == JobStatus.SUCCEEDED
    assert again.result == {"image": "fake-os", "image_id": image.pk, "already_registered": True}
    assert "registered already" in again.log and "step 1 of 3" not in again.log
    assert Image.objects.filter(name="fake-os").count() == 1


def test_a_failing_script_fails_the_job_with_its_last_lines_for_administrators(
        transactional_db, test_host, admin_user, fake_recipe):
    fake_recipe(fail=True)
    job = image_build(actor=admin_user, via=Via.ADMIN, recipe="fake-os")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Building fake-os failed at “making the disk” (exit status 3)")
    assert "disk full" in job.error_detail and "disk full" not in job.error
    assert not Image.objects.filter(name="fake-os").exists()
    # a failed build does not block the next one
    assert image_build(actor=admin_user, via=Via.ADMIN, recipe="fake-os").kind == IMAGE_BUILD


# --- the doors: admin button and manage.py image_build --------------------------------------------------

def test_the_images_changelist_offers_the_build_and_queues_it(db, test_host, admin_user, client):
    client.force_login(admin_user)
    changelist = reverse("admin:storage_image_changelist")
    build_url = reverse("admin:storage_image_build", args=["debian-12"])
    html = client.get(changelist).content.decode()
    assert f'action="{build_url}"' in html and "Build Debian 12 image</button>" in html
    assert client.get(build_url).status_code == 405  # only a POST builds

    running = _running_build()
    response = client.post(build_url, follow=True)
    assert any(lvl == levels.ERROR and "An image build is already running" in text
               for lvl, text in ((m.level, str(m.message)) for m in response.context["messages"]))
    html = client.get(changelist).content.decode()
    assert "Debian 12 image: building (0%)" in html and "Build Debian 12 image</button>" not in html

    Job.objects.filter(pk=running.pk).update(status=JobStatus.SUCCEEDED)
    response = client.post(build_url)
    job = Job.objects.filter(kind=IMAGE_BUILD).exclude(pk=running.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:portal_job_change", args=[job.pk])
    assert job.via == Via.ADMIN and job.actor == admin_user


def test_ordinary_users_cannot_use_the_build_button(db, test_host, alice, client):
    client.force_login(alice)
    response = client.post(reverse("admin:storage_image_build", args=["debian-12"]))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert not Job.objects.filter(kind=IMAGE_BUILD).exists()


def test_the_command_builds_waits_and_exits_with_the_error_kind(transactional_db, test_host, alice, admin_user,
                                                               fake_recipe, settings, monkeypatch):
    fake_recipe()
    with pytest.raises(CommandError, match="Only administrators build images") as refused:
        call_command("image_build", "fake-os", "--user", "alice", stdout=StringIO())
    assert refused.value.returncode == PermissionDenied.exit_code
    with pytest.raises(CommandError, match="No host 'nowhere'") as missing:
        call_command("image_build", "fake-os", "--host", "nowhere", stdout=StringIO())
    assert missing.value.returncode == 3

    # No worker takes the job (a backend that only stores it): with --wait the command runs it itself.
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
    monkeypatch.setattr("storage.management.commands.image_build.WORKER_GRACE_SECONDS", 0.0)
    out = StringIO()
    call_command("image_build", "fake-os", "--user", admin_user.username, "--wait", stdout=out)
    text = out.getvalue()
    assert text.startswith("Building image fake-os.\njob ")
    assert "No job worker took the job; running it here." in text
    assert "succeeded 100% Done" in text
    image = Image.objects.get(name="fake-os")
    assert Job.objects.get(kind=IMAGE_BUILD).via == Via.CLI and image.cloud_init


# --- the real Debian image (built by setup.sh --test) on qemu:///system -------------------------------

@pytest.mark.timeout(1800)  # only if the stamp is stale (the script changed since setup): then it builds
def test_the_job_registers_the_debian_12_image_in_the_pool(qemu_host, admin_user, settings):
    recipe = RECIPES["debian-12"]
    job = image_build(actor=admin_user, via=Via.CLI, host=qemu_host)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{job.error_detail}\n{job.log}"
    image = Image.objects.get(name="debian-12")
    out = recipe.outdir
    assert out == Path(settings.DEBIAN_IMAGE_DIR)
    assert (image.title, image.os_name, image.format, image.boot_mode) == (
        "Debian 12 (cloud-init)", "Debian 12", "qcow2", "kernel")
    assert (image.kernel_path, image.initrd_path, image.cmdline) == (
        str(out / "vmlinuz"), str(out / "initrd.img"), "root=/dev/vda rw console=ttyS0")
    assert (image.cloud_init, image.login_user, image.min_disk_gib, image.is_default, image.ready_marker) == (
        True, "debian", 3, False, "")
    assert image.size_bytes == 3 * GIB and image.pool.host == qemu_host
    # The base volume is in the host's pool, a qcow2 of 3 GiB that libvirt knows.
    info = get_driver(qemu_host.uri).volume_info(pool=image.pool.name, name=image.volume_name)
    assert (info.path, info.capacity_bytes) == (image.path, 3 * GIB)
    probe = subprocess.run(["qemu-img", "info", "--output=json", "-U", image.path], capture_output=True, text=True,
                           check=True)
    assert '"format": "qcow2"' in probe.stdout
    assert job.result["image"] == "debian-12" and job.target_name == qemu_host.name


def test_login_user_is_a_user_name_and_both_fields_are_edited_through_image_update(db, test_host, admin_user,
                                                                                  tmp_path):
    from storage.services import image_register, image_update

    source = tmp_path / "blank.img"
    source.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)  # a blank disk with an MBR
    with pytest.raises(ValidationFailed, match="Login user must be a user name") as bad:
        image_register(actor=admin_user, host=test_host, name="test-ci", title="CI", source_path=str(source),
                       fmt="raw", cloud_init=True, login_user="Root; rm")
    assert list(bad.value.errors) == ["login_user"]
    image = image_register(actor=admin_user, host=test_host, name="test-ci", title="CI", source_path=str(source),
                           fmt="raw")
    assert (image.cloud_init, image.login_user) == (False, "")
    image = image_update(actor=admin_user, via=Via.ADMIN, image=image, cloud_init=True, login_user="ubuntu")
    image.refresh_from_db()
    assert (image.cloud_init, image.login_user) == (True, "ubuntu")
    event = AuditEvent.objects.get(action="image.update", target_id=str(image.pk))
    assert event.message == "cloud_init: False → True; login_user: '' → 'ubuntu'"
    with pytest.raises(ValidationFailed, match="Login user must be"):
        image_update(actor=admin_user, via=Via.ADMIN, image=image, login_user="-x")

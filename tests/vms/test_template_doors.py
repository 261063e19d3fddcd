"""Templates through every door (libvirt's test driver, jobs run at once): the VM page's Make template
form and the create form's thin/full choice, the API, the CLI and the admin's image list (Slack: in
tests/chatops/test_flows.py)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from portal.choices import Via
from portal.models import Job
from storage.models import Image
from vms.models import VM
from vms.services import vm_create, vm_template_create

pytestmark = pytest.mark.django_db(transaction=True)


def stopped_vm(user, name="web-1") -> VM:
    result = vm_create(actor=user, via=Via.API, name=name, vcpus=1, memory_mib=128, disk_gib=1, start=False)
    return VM.objects.get(pk=result.vm.pk)


def template_of(user, vm, name="tpl-web") -> Image:
    vm_template_create(actor=user, via=Via.API, vm=vm, name=name)
    return Image.objects.get(name=name)


# --- web --------------------------------------------------------------------------------------------

def test_the_vm_page_makes_a_template_of_a_stopped_vm(test_host, alice, client):
    vm = stopped_vm(alice)
    client.force_login(alice)
    page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
    assert 'id="template"' in page and 'data-action="template"' in page
    assert 'data-action="template" disabled' not in page  # stopped: the button is enabled
    response = client.post(reverse("vms:template", args=[vm.pk]),
                           {"name": "tpl-web", "title": "Web", "visibility": "private"})
    assert response.status_code == 302 and response["Location"].endswith("#template")
    image = Image.objects.get(name="tpl-web")
    assert image.kind == Image.Kind.TEMPLATE and image.owner == alice and image.title == "Web"
    assert Job.objects.get(kind="vm.template").via == "web"


def test_the_vm_page_shows_why_a_template_is_refused(test_host, alice, client):
    vm = VM.objects.get(pk=vm_create(actor=alice, via=Via.API, name="web-1", vcpus=1, memory_mib=128,
                                     disk_gib=1).vm.pk)
    client.force_login(alice)
    page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
    assert 'data-action="template" disabled' in page and "Stop the VM to make a template of it." in page
    response = client.post(reverse("vms:template", args=[vm.pk]), {"name": "tpl-web"})
    assert response.status_code == 400
    assert "Stop it first" in response.content.decode()
    response = client.post(reverse("vms:template", args=[vm.pk]), {"name": "Bad Name"})
    assert "lowercase letters" in response.content.decode()
    assert not Image.objects.filter(kind=Image.Kind.TEMPLATE).exists()


def test_the_create_form_offers_thin_or_full_for_templates(test_host, alice, client):
    template_of(alice, stopped_vm(alice))
    client.force_login(alice)
    page = client.get(reverse("vms:create")).content.decode()
    assert "data-clone-choice" in page and "data-template" in page and "Full copy" in page
    response = client.post(reverse("vms:create"), {
        "name": "full-1", "image": str(Image.objects.get(name="tpl-web").pk), "flavor": "custom",
        "vcpus": "", "memory_mib": "", "disk_gib": "", "clone": "full"})
    assert response.status_code == 302, response.content.decode()[:2000]
    vm = VM.objects.get(name="full-1")
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib) == (1, 128, 1)  # the template's sizes
    disk = vm.disks.get(target="vda").volume
    assert disk.copy_of is not None and disk.backing_image is None


# --- API --------------------------------------------------------------------------------------------

def test_create_vm_from_a_template_shows_its_sizes_to_confirm(test_host, alice, client):
    """The library's "Create VM from this image" on a template (sealed, or an OVA appliance) opens the
    form with Custom sizes filled in from the template; the user confirms them and the VM has them."""
    vm = stopped_vm(alice)
    tpl = template_of(alice, vm)
    Image.objects.filter(pk=tpl.pk).update(default_vcpus=2, default_memory_mib=192)
    client.force_login(alice)
    form = client.get(reverse("vms:create") + f"?image={tpl.pk}").content.decode()
    assert 'name="flavor" value="custom" checked' in form
    for field, value in (("vcpus", "2"), ("memory_mib", "192"), ("disk_gib", "1")):
        assert f'name="{field}"' in form and f'value="{value}"' in form.split(f'name="{field}"', 1)[1][:200]
    response = client.post(reverse("vms:create"), {"name": "from-tpl", "flavor": "custom", "vcpus": "2",
                                                  "memory_mib": "192", "disk_gib": "1", "image": str(tpl.pk),
                                                  "networks_shown": "1"})
    assert response.status_code == 302, response.content.decode()[:2000]
    made = VM.objects.get(name="from-tpl")
    assert (made.image, made.vcpus, made.memory_mib, made.disk_gib) == (tpl, 2, 192, 1)


def test_api_template_is_202_with_the_job_and_errors_are_4xx(test_host, alice, bob, client_for):
    vm = stopped_vm(alice)
    api = client_for(alice)
    response = api.post(f"/api/vms/{vm.pk}/template/", {"name": "tpl-api", "title": "API"}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["job"]["kind"] == "vm.template" and body["message"] == "Making template tpl-api of web-1."
    assert Image.objects.get(name="tpl-api").owner == alice
    again = api.post(f"/api/vms/{vm.pk}/template/", {"name": "tpl-api"}, format="json")
    assert again.status_code == 400 and "exists already" in str(again.json())
    assert client_for(bob).post(f"/api/vms/{vm.pk}/template/", {"name": "x-1"}, format="json").status_code == 404
    created = api.post("/api/vms/", {"name": "thin-1", "image": "tpl-api", "clone": "thin", "start": False},
                       format="json")
    assert created.status_code == 202, created.json()
    assert VM.objects.get(name="thin-1").disks.get(target="vda").volume.backing_image.name == "tpl-api"
    bad = api.post("/api/vms/", {"name": "x-2", "image": "tpl-api", "clone": "deep"}, format="json")
    assert bad.status_code == 400 and "thin or full" in str(bad.json())


def test_api_refuses_a_running_vm_with_409(test_host, alice, client_for):
    vm = vm_create(actor=alice, via=Via.API, name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    response = client_for(alice).post(f"/api/vms/{vm.pk}/template/", {"name": "tpl-x"}, format="json")
    assert response.status_code == 409 and "Stop it first" in response.json()["detail"]


# --- CLI --------------------------------------------------------------------------------------------

def vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_cli_template_and_full_copy(test_host, alice):
    stopped_vm(alice)
    out = vm_cmd("--user", "alice", "--wait", "template", "web-1", "--name", "tpl-cli", "--title", "From CLI")
    assert "Making template tpl-cli of web-1." in out and "succeeded 100%" in out
    assert Image.objects.get(name="tpl-cli").title == "From CLI"
    out = vm_cmd("--user", "alice", "--wait", "create", "full-1", "--image", "tpl-cli", "--clone", "full",
                 "--no-start")
    assert "succeeded 100%" in out
    assert VM.objects.get(name="full-1").disks.get(target="vda").volume.copy_of.name == "tpl-cli"
    with pytest.raises(CommandError, match="exists already"):
        vm_cmd("--user", "alice", "template", "web-1", "--name", "tpl-cli")


# --- admin ------------------------------------------------------------------------------------------

def test_admin_image_list_shows_kind_and_clones(test_host, alice, admin_user, client):
    template = template_of(alice, stopped_vm(alice))
    vm_create(actor=alice, via=Via.API, name="thin-1", image=template, start=False)
    vm_create(actor=alice, via=Via.API, name="full-1", image=template, clone="full", start=False)
    client.force_login(admin_user)
    html = client.get(reverse("admin:storage_image_changelist")).content.decode()
    assert "Template" in html and "thin clones" in html and "full copies" in html
    assert f"copy_of__id__exact={template.pk}" in html and f"backing_image__id__exact={template.pk}" in html
    response = client.get(reverse("admin:storage_image_delete", args=[template.pk]), follow=True)
    assert "VMs depend on it (thin-1)" in response.content.decode()

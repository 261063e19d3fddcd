"""VM names with surrounding whitespace are refused on rename as on create, through every door."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from portal.choices import Via
from portal.exceptions import ValidationFailed
from vms.admin import VMChangeForm
from vms.models import VM
from vms.services import vm_create, vm_update
from vms.validation import NAME_HELP, validate_vm_name

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}
PADDED = ["vm ", " vm", "vm\n", "\tvm"]


def _invalid(name: str) -> str:
    return f"Invalid name {name!r}: use {NAME_HELP}."


@pytest.fixture
def vm(alice, test_host) -> VM:
    return VM.objects.get(pk=vm_create(actor=alice, via=Via.API, name="web-1", **SMALL).vm.pk)


@pytest.mark.parametrize("name", PADDED)
def test_the_rule_refuses_surrounding_whitespace_instead_of_trimming_it(name):
    with pytest.raises(ValidationFailed) as exc:
        validate_vm_name(name)
    assert exc.value.errors == {"name": [_invalid(name)]}
    assert validate_vm_name("vm") == "vm"


@pytest.mark.parametrize("name", PADDED)
def test_api_rename_refuses_a_padded_name_with_the_create_message(alice, vm, name):
    client = APIClient()
    client.force_authenticate(alice)

    created = client.post("/api/vms/", {"name": name, **SMALL}, format="json")
    renamed = client.patch(f"/api/vms/{vm.pk}/", {"name": name}, format="json")

    assert created.status_code == 400 and renamed.status_code == 400, (created.content, renamed.content)
    assert renamed.json()["detail"] == created.json()["detail"] == _invalid(name)
    assert renamed.json()["errors"] == {"name": [_invalid(name)]}
    vm.refresh_from_db()
    assert vm.name == "web-1"
    assert VM.objects.count() == 1


def test_web_rename_and_create_forms_refuse_a_padded_name(client, alice, vm):
    client.force_login(alice)

    renamed = client.post(f"/vms/{vm.pk}/edit/", {"name": "web-2 ", "description": ""})
    created = client.post("/vms/new/", {"name": "web-3\n", "flavor": "custom", "vcpus": "1",
                                        "memory_mib": "128", "disk_gib": "1"})

    assert renamed.status_code == 400
    assert renamed.context["edit_form"].errors["name"] == [_invalid("web-2 ")]
    assert created.context["form"].errors["name"] == [_invalid("web-3\n")]
    vm.refresh_from_db()
    assert vm.name == "web-1"
    assert VM.objects.count() == 1


def test_admin_change_form_refuses_a_padded_name(vm):
    form = VMChangeForm(data={"name": "web-2 ", "description": ""}, instance=vm)

    assert not form.is_valid()
    assert form.errors["name"] == [_invalid("web-2 ")]
    assert VMChangeForm(data={"name": "web-2", "description": ""}, instance=vm).is_valid()


def test_the_service_refuses_a_padded_rename_from_any_door(alice, vm):
    with pytest.raises(ValidationFailed, match="Invalid name 'web-2 '"):
        vm_update(actor=alice, via=Via.ADMIN, vm=vm, name="web-2 ")
    vm.refresh_from_db()
    assert vm.name == "web-1"


@pytest.mark.parametrize("name", [" before", "before ", "before\n", "\tbefore"])
def test_snapshot_names_with_surrounding_whitespace_are_refused_like_vm_names(name):
    """Snapshot names follow the VM-name habit: refused as typed, never trimmed into another name."""
    from vms.validation import validate_snapshot_name

    with pytest.raises(ValidationFailed, match="Invalid snapshot name"):
        validate_snapshot_name(name)
    assert validate_snapshot_name("before") == "before"

"""Slack `/vm backup`, `/vm backups` (with Restore buttons), `/vm restore`, and the backup space in `/vm quota`,
on libvirt's test driver with requests signed as Slack signs them and the Web API pointed at the local fake."""

from __future__ import annotations

import pytest

from backups.models import Backup
from chatops import commands as c
from chatops import formatting as f
from vms.models import VM

from .conftest import reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_linked(alice, link, test_host):
    link(alice, "UALICE")
    return alice


@pytest.fixture
def vm(alice_linked):
    from portal.choices import Via
    from vms.services import vm_create

    return VM.objects.get(pk=vm_create(actor=alice_linked, via=Via.API, name="web-1", vcpus=1, memory_mib=128,
                                       disk_gib=1).vm.pk)


def make_backup(vm, **extra):
    fields = {"vm": vm, "vm_name": vm.name, "owner": vm.owner, "kind": "full", "status": "ready",
              "size_bytes": 5 << 20, "disks": [{"target": "vda", "path": "/secret/vda.qcow2"}], **extra}
    return Backup.objects.create(**fields)


def test_parser():
    assert c.parse("backup web-1") == c.TakeBackup(name="web-1", kind="auto")
    assert c.parse("backup web-1 full") == c.TakeBackup(name="web-1", kind="full")
    assert c.parse("backup web-1 incremental") == c.TakeBackup(name="web-1", kind="incremental")
    assert c.parse("backups") == c.ListBackups()
    assert c.parse("backups web-1") == c.ListBackups(name="web-1")
    assert c.parse("restore #12 web-2") == c.RestoreBackup(backup="12", name="web-2")
    assert c.parse("quota request --backup 50 for the archive").max_backup_gib == "50"
    for bad in ("backup", "backup web-1 sideways", "backups a b", "restore 12"):
        with pytest.raises(c.ParseError):
            c.parse(bad)


def test_help_lists_the_backup_commands(slack, alice_linked):
    text = reply_text(slack.command("help"))
    assert "/vm backup NAME [full|incremental]" in text and "/vm backups [NAME]" in text
    assert "/vm restore BACKUP-ID NEW-NAME" in text


def test_backups_lists_sizes_and_a_restore_button(slack, vm):
    full = make_backup(vm)
    make_backup(vm, kind="incremental", parent=full, status="running", progress=40)

    response = slack.command("backups web-1")
    text = reply_text(response)
    assert "Backups of web-1" in text and "5 MiB" in text and f"on #{full.pk}" in text and "running 40%" in text
    assert "/secret" not in text
    buttons = [b["accessory"] for b in response.json()["blocks"] if "accessory" in b]
    assert len(buttons) == 1  # only the ready one can be restored
    assert buttons[0]["action_id"] == f.A_BACKUP_RESTORE and buttons[0]["value"] == str(full.pk)
    assert f"web-1-r{full.pk}" in buttons[0]["confirm"]["text"]["text"]
    assert "*Your backups* (2)" in reply_text(slack.command("backups"))


def test_backups_of_another_users_vm_is_not_found(slack, vm, bob, link):
    link(bob, "UBOB")
    make_backup(vm)
    text = reply_text(slack.command("backups web-1", user="UBOB"))
    assert "web-1" in text and "Backups of" not in text
    assert "no backups" in reply_text(slack.command("backups", user="UBOB"))


def test_quota_shows_backup_space(slack, alice_linked):
    assert "Backup space" in reply_text(slack.command("quota"))


# --- through the services (pass once backups.services lands) --------------------------------------

def test_backup_command_refuses_someone_elses_vm(slack, vm, bob, link):
    link(bob, "UBOB")
    slack.command("backup web-1", user="UBOB")
    assert not Backup.objects.exists()


def test_backup_command_announces_the_job(slack, vm):
    slack.command("backup web-1 full")
    backup = Backup.objects.get()
    assert backup.created_via == "slack" and backup.kind == "full"
    assert any(f"backup #{backup.pk}" in call.text for call in slack.fake.said())


def test_restore_button_restores_to_a_new_vm(slack, vm):
    slack.command("backup web-1 full")
    backup = Backup.objects.get(status="ready")
    slack.click(f.A_BACKUP_RESTORE, str(backup.pk))
    assert VM.objects.filter(name=f"web-1-r{backup.pk}", owner=vm.owner).exists()


def test_restore_button_says_why_not(slack, vm):
    backup = make_backup(vm)  # a row without files: the service refuses, the user hears why
    slack.fake.clear()
    slack.click(f.A_BACKUP_RESTORE, str(backup.pk))
    assert any(f"Backup {backup.pk}" in call.text for call in slack.fake.said())
    assert VM.objects.count() == 1

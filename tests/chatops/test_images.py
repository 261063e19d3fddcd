"""The image library from Slack: `/vm images [KIND]` lists what the linked user may use (kind, name, size,
owner), and `/vm create NAME --image TEMPLATE` makes a VM from a template; through the real endpoint
with signed requests (libvirt's test driver; jobs run on commit)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from chatops import commands as c
from storage.models import Image, StoragePool
from vms.models import VM

from .conftest import CHANNEL, reply_of, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def images(test_host, alice, bob):
    """Besides test-blank (the library's default): alice's private disk, bob's private disk, bob's ISO for
    the qa group (alice is in it), and a public template of the library with its own sizes."""
    pool = StoragePool.objects.get(host=test_host)
    qa = Group.objects.create(name="qa")
    alice.groups.add(qa)

    def make(name, **kw):
        return Image.objects.create(name=name, title=kw.pop("title", name), pool=pool,
                                    volume_name=f"image-{name}.qcow2", path=f"/nowhere/{name}", **kw)

    iso = make("bob-iso", owner=bob, visibility="group", kind="iso", format="raw", size_bytes=300 * 1024**2)
    iso.groups.add(qa)
    return {
        "alice-disk": make("alice-disk", owner=alice, visibility="private", size_bytes=2 * 1024**3,
                           title="Alice's <b>disk</b>"),
        "bob-disk": make("bob-disk", owner=bob, visibility="private", size_bytes=1024**3),
        "bob-iso": iso,
        "base-tpl": make("base-tpl", kind="template", size_bytes=1024**3, title="Base template",
                         default_vcpus=1, default_memory_mib=128),
    }


@pytest.fixture
def alice_linked(alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    return alice


@pytest.mark.parametrize("text, command", [
    ("images", c.Images()),
    ("imgs", c.Images()),
    ("images iso", c.Images(kind="iso")),
    ("images templates", c.Images(kind="template")),
    ("IMAGES Disk", c.Images(kind="disk")),
])
def test_images_is_parsed_with_an_optional_kind(text, command):
    assert c.parse(text) == command


@pytest.mark.parametrize("text", ["images foo", "images iso disk"])
def test_images_with_something_else_is_a_parse_error(text):
    with pytest.raises(c.ParseError) as exc:
        c.parse(text)
    assert "`/vm images disk|iso|template` for one kind" in exc.value.message


def test_images_lists_kind_name_size_and_owner_of_what_the_caller_may_use(slack, alice_linked, images):
    text = reply_text(slack.command("images"))
    assert "*Images you can use* (4)" in text
    assert "💽 `alice-disk` — Alice's &lt;b&gt;disk&lt;/b&gt; · disk image · 2 GiB · yours" in text
    assert "💿 `bob-iso` — ISO · 300 MiB · bob" in text
    assert "📐 `base-tpl` — Base template · template · 1 GiB · library" in text
    assert "`test-blank` — Blank (test driver) · disk image · 4 KiB · library ⭐ *default*" in text
    assert "bob-disk" not in text  # bob's private image
    assert "`/vm create NAME --image base-tpl` creates a VM from one (a template brings its sizes)" in text
    assert "/images/|upload or import images in the portal>" in text

    text = reply_text(slack.command("images iso"))
    assert "*ISOs you can use* (1)" in text and "bob-iso" in text and "alice-disk" not in text


def test_images_says_so_when_there_is_none_of_a_kind(slack, alice_linked, test_host):
    assert "There are no templates you can use yet." in reply_text(slack.command("images template"))


def test_images_needs_a_linked_account(slack, images):
    assert "not linked" in reply_text(slack.command("images"))


def test_create_from_a_template_by_name(slack, alice_linked, images):
    response = slack.command("create web-1 --image base-tpl --flavor small")
    assert reply_of(response) == {}  # announced in the channel
    vm = VM.objects.get(name="web-1")
    assert vm.image.name == "base-tpl"
    assert "is creating *web-1* (1 vCPU · 128 MiB · 1 GiB · base-tpl)" in slack.fake.posts(CHANNEL)[0].text


def test_create_from_an_image_the_caller_may_not_use_is_refused(slack, alice_linked, images):
    text = reply_text(slack.command("create web-1 --image bob-disk --flavor small"))
    assert "Unknown image 'bob-disk'" in text
    assert not VM.objects.filter(name="web-1").exists()


def test_create_from_an_iso_gets_a_blank_disk_and_the_iso_in_its_cd_drive(slack, alice_linked, images):
    response = slack.command("create inst-1 --image bob-iso --flavor small")
    assert reply_of(response) == {}, reply_text(response)
    vm = VM.objects.get(name="inst-1")
    assert vm.image.name == "bob-iso" and vm.status == "running"
    assert vm.cdrom is not None and vm.cdrom.name == "bob-iso"
    assert "is creating *inst-1*" in slack.fake.posts(CHANNEL)[0].text

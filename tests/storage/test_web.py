"""The image library's web pages: the list (visibility, kinds, "Mine"), an image's page, the owner's
and administrators' edit and delete through storage.services, with refusals shown as messages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from portal.choices import Via
from portal.models import AuditEvent
from storage.models import Image, StoragePool
from vms.services import vm_create


@pytest.fixture
def library(test_host, alice, bob):
    """test-blank (the library's, public) plus: alice's private disk, bob's private disk, bob's ISO
    shared with the qa group (alice is in qa), and a public template of the library."""
    pool = StoragePool.objects.get(host=test_host)
    qa = Group.objects.create(name="qa")
    alice.groups.add(qa)

    def make(name, **kw):
        kw.setdefault("title", name.replace("-", " ").title())
        return Image.objects.create(name=name, pool=pool, volume_name=f"image-{name}.qcow2",
                                    path=f"/nowhere/{name}.qcow2", size_bytes=2 * 1024**3, **kw)

    images = {
        "alice-disk": make("alice-disk", owner=alice, visibility="private", source_format="vmdk",
                           actual_size_bytes=300 * 1024**2, checksum_sha256="ab" * 32, source="upload alice.vmdk"),
        "bob-disk": make("bob-disk", owner=bob, visibility="private"),
        "bob-iso": make("bob-iso", owner=bob, visibility="group", kind="iso", format="raw", source_format="iso"),
        "base-tpl": make("base-tpl", kind="template", visibility="public", default_vcpus=2, default_memory_mib=1024),
    }
    images["bob-iso"].groups.add(qa)
    images["test-blank"] = Image.objects.get(name="test-blank")
    return images


def _rows(html: str) -> set[str]:
    import re

    return set(re.findall(r'<tr data-image="([^"]+)"', html))


def test_the_library_lists_what_the_user_may_use(library, alice, bob, admin_user, client):
    client.force_login(alice)
    html = client.get("/images/").content.decode()
    assert _rows(html) == {"alice-disk", "bob-iso", "base-tpl", "test-blank"}
    assert "abababababab…" in html and 'data-copy-text="' + "ab" * 32 + '"' in html  # the short checksum, copyable
    assert "(300 MiB stored)" in html and "vmdk" in html
    assert 'href="/images/"' in html and 'aria-current="page">Images</a>' in html  # the site navigation

    client.force_login(bob)
    assert _rows(client.get("/images/").content.decode()) == {"bob-disk", "bob-iso", "base-tpl", "test-blank"}
    client.force_login(admin_user)
    assert _rows(client.get("/images/").content.decode()) == set(library)


def test_kind_filter_mine_tab_and_search(library, alice, client):
    client.force_login(alice)
    assert _rows(client.get("/images/?kind=iso").content.decode()) == {"bob-iso"}
    assert _rows(client.get("/images/?kind=template").content.decode()) == {"base-tpl"}
    assert _rows(client.get("/images/?mine=1").content.decode()) == {"alice-disk"}
    assert _rows(client.get("/images/?mine=1&kind=iso").content.decode()) == set()
    assert _rows(client.get("/images/?q=blank").content.decode()) == {"test-blank"}
    assert _rows(client.get("/images/?kind=nonsense").content.decode()) == set(library) - {"bob-disk"}


def test_the_page_carries_the_upload_and_url_forms(library, alice, client):
    client.force_login(alice)
    html = client.get("/images/").content.decode()
    assert 'data-endpoint="/api/uploads/"' in html and 'data-import-url="/api/images/import/"' in html
    assert 'data-chunk-bytes="8388608"' in html
    assert "vendor/tus/tus.min.js" in html and "portal/images.js" in html
    assert '<input type="checkbox" name="groups" value="qa">' in html  # alice's own groups to share with
    assert '<option value="private" selected>Owner only</option>' in html  # her own space, for her


def test_administrators_add_to_the_library_for_everyone_by_default(library, admin_user, client):
    client.force_login(admin_user)
    html = client.get("/images/").content.decode()
    assert '<option value="public" selected>Everyone</option>' in html
    assert "count against your disk quota" not in html


def test_mine_says_what_to_do_when_empty(test_host, bob, client):
    client.force_login(bob)
    assert "You have no images yet" in client.get("/images/?mine=1").content.decode()


def test_anonymous_users_are_sent_to_log_in(client):
    assert client.get("/images/").status_code == 302


def test_an_image_page_shows_its_fields_and_links_to_create_a_vm(library, alice, client):
    client.force_login(alice)
    image = library["alice-disk"]
    html = client.get(f"/images/{image.pk}/").content.decode()
    assert "came as vmdk" in html and "ab" * 32 in html and "upload alice.vmdk" in html
    assert f'href="/vms/new/?image={image.pk}"' in html
    assert "Save settings" in html and "Delete image" in html  # her own
    assert "/nowhere/" not in html  # no host path for a user

    html = client.get(f"/images/{library['bob-iso'].pk}/").content.decode()
    assert "Save settings" not in html and "Delete image" not in html  # bob's, only shared with her
    assert client.get(f"/images/{library['bob-disk'].pk}/").status_code == 404  # bob's private one


def test_the_create_form_preselects_the_image(library, alice, client):
    client.force_login(alice)
    tpl = library["base-tpl"]
    html = client.get(f"/vms/new/?image={tpl.pk}").content.decode()
    assert f'name="image" value="{tpl.pk}" checked' in html
    html = client.get(f"/vms/new/?image={library['bob-disk'].pk}").content.decode()  # not hers: the default
    assert f'name="image" value="{library["test-blank"].pk}" checked' in html


def test_the_owner_edits_title_visibility_and_groups(library, alice, client):
    client.force_login(alice)
    image = library["alice-disk"]
    qa = Group.objects.get(name="qa")
    response = client.post(f"/images/{image.pk}/edit/", {
        "title": "Alice's disk", "description": "For the demo", "visibility": "group", "groups": [qa.pk]})
    assert response.status_code == 302
    image.refresh_from_db()
    assert (image.title, image.description, image.visibility) == ("Alice's disk", "For the demo", "group")
    assert list(image.groups.all()) == [qa]
    assert AuditEvent.objects.filter(action="image.update", via=Via.WEB).exists()
    assert "Saved image alice-disk." in client.get(response["Location"]).content.decode()


def test_edit_errors_are_shown_next_to_the_fields(library, alice, client):
    client.force_login(alice)
    image = library["alice-disk"]
    response = client.post(f"/images/{image.pk}/edit/", {"title": "  ", "visibility": "private"})
    assert response.status_code == 400
    assert "Title is required." in response.content.decode()
    image.refresh_from_db()
    assert image.title == "Alice Disk"


def test_others_cannot_edit_or_delete(library, alice, bob, client):
    client.force_login(alice)
    iso = library["bob-iso"]
    response = client.post(f"/images/{iso.pk}/edit/", {"title": "Mine now", "visibility": "public"},
                           HTTP_REFERER=f"/images/{iso.pk}/")
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Only administrators and the image&#x27;s owner may change image bob-iso." in page
    response = client.post(f"/images/{library['base-tpl'].pk}/delete/", follow=True)
    assert Image.objects.filter(name="base-tpl").exists()
    assert "alert" in response.content.decode()
    assert client.post(f"/images/{library['bob-disk'].pk}/delete/").status_code == 404
    iso.refresh_from_db()
    assert iso.title == "Bob Iso"


def test_delete_is_refused_while_vms_use_the_image_and_done_otherwise(library, alice, admin_user, client):
    blank = library["test-blank"]
    vm_create(actor=alice, via=Via.API, name="web-1", vcpus=1, memory_mib=128, disk_gib=1, image=blank.name)
    client.force_login(admin_user)
    response = client.post(f"/images/{blank.pk}/delete/", HTTP_REFERER=f"/images/{blank.pk}/", follow=True)
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/images/{blank.pk}/"
    assert "Image test-blank is in use (thin clones: web-1); delete those VMs first." in html
    assert Image.objects.filter(pk=blank.pk).exists()

    tpl = library["base-tpl"]
    response = client.post(f"/images/{tpl.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/images/"
    assert "Deleted image base-tpl." in response.content.decode()
    assert not Image.objects.filter(pk=tpl.pk).exists()

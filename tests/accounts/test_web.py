"""The SSH keys page /account/keys/: list, add (errors next to the field), delete with a confirmation."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import SSHKey
from accounts.services import sshkey_add
from portal.models import AuditEvent

from .conftest import ed25519_line

pytestmark = pytest.mark.django_db

PAGE = "/account/keys/"


@pytest.fixture
def browser(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf(client: Client, url: str = PAGE) -> str:
    page = client.get(url)
    assert page.status_code == 200
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


def test_the_page_needs_a_login(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_user_menu_links_the_page_and_the_empty_state_says_what_to_do(browser):
    page = browser.get("/").content.decode()
    assert f'href="{PAGE}"' in page and ">SSH keys</a>" in page
    page = browser.get(PAGE).content.decode()
    assert "No SSH keys yet." in page and "Add SSH key" in page
    assert "ssh-ed25519, ecdsa-sha2-nistp256/384/521, or ssh-rsa of 2048 bits or more" in page


def test_add_a_key_then_see_it_listed(browser, alice):
    line = ed25519_line("alice@laptop")
    response = browser.post(PAGE, {"csrfmiddlewaretoken": csrf(browser), "name": "", "public_key": line + "\n"})
    assert response.status_code == 302 and response["Location"] == PAGE
    key = SSHKey.objects.get(user=alice)
    assert (key.name, key.public_key, key.created_via) == ("alice@laptop", line, "web")
    page = browser.get(PAGE).content.decode()
    assert f"Added SSH key alice@laptop ({key.fingerprint})." in page
    row = page.split("<tbody>")[1].split("</tbody>")[0]
    assert "alice@laptop" in row and "ED25519" in row and "256 bits" in row and key.fingerprint in row
    assert AuditEvent.objects.filter(action="sshkey.add", via="web", actor=alice).exists()


def test_a_bad_key_is_shown_next_to_the_field_and_the_input_is_kept(browser, alice, rsa_1024_pub):
    response = browser.post(PAGE, {"csrfmiddlewaretoken": csrf(browser), "name": "old",
                                   "public_key": f'command="rm -rf /" {ed25519_line()}'})
    assert response.status_code == 400
    page = response.content.decode()
    error = re.search(r'<div class="field-error" id="public_key-error"[^>]*>(.*?)</div>', page, re.S).group(1)
    assert "Paste only the key itself" in error
    assert 'aria-invalid="true"' in page and 'value="old"' in page and "command=&quot;rm -rf /&quot;" in page
    response = browser.post(PAGE, {"csrfmiddlewaretoken": csrf(browser), "name": "", "public_key": rsa_1024_pub})
    assert "This RSA key has 1024 bits" in response.content.decode()
    assert not SSHKey.objects.exists()


def test_a_duplicate_name_is_shown_on_the_name_field(browser, alice):
    sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop")
    response = browser.post(PAGE, {"csrfmiddlewaretoken": csrf(browser), "name": "laptop",
                                   "public_key": ed25519_line()})
    page = response.content.decode()
    error = re.search(r'<div class="field-error" id="name-error"[^>]*>(.*?)</div>', page, re.S).group(1)
    assert "There is already a key named" in error


def test_the_limit_is_shown_above_the_form(browser, alice, settings):
    settings.SSH_KEYS_PER_USER = 1
    sshkey_add(actor=alice, via="web", public_key=ed25519_line())
    response = browser.post(PAGE, {"csrfmiddlewaretoken": csrf(browser), "public_key": ed25519_line()})
    assert response.status_code == 400
    assert "The key was not added." in response.content.decode()
    assert "the most allowed (1)" in response.content.decode()


def test_delete_asks_first_then_removes_the_key(browser, alice):
    key = sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop")
    page = browser.get(PAGE).content.decode()
    form = re.search(rf'<form method="post" action="/account/keys/{key.pk}/delete/">(.*?)</form>', page, re.S).group(1)
    assert f'data-confirm="Delete SSH key laptop ({key.fingerprint})?' in form
    response = browser.post(f"/account/keys/{key.pk}/delete/", {"csrfmiddlewaretoken": csrf(browser)})
    assert response.status_code == 302 and response["Location"] == PAGE
    assert not SSHKey.objects.exists()
    assert "Deleted SSH key laptop." in browser.get(PAGE).content.decode()
    assert AuditEvent.objects.filter(action="sshkey.delete", via="web").exists()


def test_delete_needs_post_and_others_keys_are_404(browser, bob):
    key = sshkey_add(actor=bob, via="web", public_key=ed25519_line(), name="bob's")
    assert browser.get(f"/account/keys/{key.pk}/delete/").status_code == 405
    response = browser.post(f"/account/keys/{key.pk}/delete/", {"csrfmiddlewaretoken": csrf(browser)})
    assert response.status_code == 404
    assert SSHKey.objects.filter(pk=key.pk).exists()
    assert "bob&#x27;s" not in browser.get(PAGE).content.decode()

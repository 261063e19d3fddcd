"""The SSH keys API: /api/keys/ and /api/keys/{id}/, with the project's JSON errors."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import SSHKey
from accounts.services import sshkey_add
from portal.models import AuditEvent

from .conftest import ed25519_line

pytestmark = pytest.mark.django_db

KEYS = "/api/keys/"


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_add_a_key(alice):
    line = ed25519_line("alice@laptop")
    response = api_for(alice).post(KEYS, {"public_key": line + "\n", "name": "laptop"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    key = SSHKey.objects.get(user=alice)
    assert body == {
        "id": key.pk, "url": f"http://testserver/api/keys/{key.pk}/", "name": "laptop", "type": "ssh-ed25519",
        "bits": 256, "fingerprint": key.fingerprint, "public_key": line, "created_at": body["created_at"],
        "created_via": "api",
    }
    assert response["Location"] == body["url"]
    assert AuditEvent.objects.filter(action="sshkey.add", via="api").exists()


def test_a_bad_key_is_400_with_the_field_error(alice, rsa_1024_pub):
    api = api_for(alice)
    response = api.post(KEYS, {"public_key": f'from="10.0.0.1" {ed25519_line()}'}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and list(body["errors"]) == ["public_key"]
    assert body["detail"].startswith("Paste only the key itself") and body["errors"]["public_key"] == [body["detail"]]
    response = api.post(KEYS, {"public_key": rsa_1024_pub}, format="json")
    assert response.status_code == 400 and "1024 bits" in response.json()["errors"]["public_key"][0]
    missing = api.post(KEYS, {"name": "x"}, format="json")  # a shape error, in the same format
    assert missing.status_code == 400 and missing.json()["code"] == "invalid" and "public_key" in missing.json()["errors"]
    duplicate_line = ed25519_line()
    assert api.post(KEYS, {"public_key": duplicate_line}, format="json").status_code == 201
    again = api.post(KEYS, {"public_key": duplicate_line}, format="json")
    assert again.status_code == 400 and "already on the account" in again.json()["errors"]["public_key"][0]
    assert SSHKey.objects.count() == 1


def test_over_the_limit_is_409(alice, settings):
    settings.SSH_KEYS_PER_USER = 1
    api = api_for(alice)
    assert api.post(KEYS, {"public_key": ed25519_line()}, format="json").status_code == 201
    response = api.post(KEYS, {"public_key": ed25519_line()}, format="json")
    assert response.status_code == 409
    assert response.json() == {"code": "conflict", "limit": 1,
                               "detail": "The account has 1 SSH key, the most allowed (1). "
                                         "Delete one you no longer use first."}


def test_list_retrieve_delete_own_keys_only(alice, bob):
    mine = sshkey_add(actor=alice, via="web", public_key=ed25519_line("mine"))
    theirs = sshkey_add(actor=bob, via="web", public_key=ed25519_line("theirs"))
    api = api_for(alice)
    listed = api.get(KEYS).json()
    assert listed["count"] == 1 and [k["name"] for k in listed["results"]] == ["mine"]
    assert api.get(f"{KEYS}{mine.pk}/").json()["fingerprint"] == mine.fingerprint
    for method in (api.get, api.delete):
        response = method(f"{KEYS}{theirs.pk}/")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert api.get(f"{KEYS}nope/").status_code == 404
    assert api.delete(f"{KEYS}{mine.pk}/").status_code == 204
    assert list(SSHKey.objects.values_list("name", flat=True)) == ["theirs"]
    assert AuditEvent.objects.filter(action="sshkey.delete", via="api").count() == 1


def test_anonymous_is_401(alice):
    key = sshkey_add(actor=alice, via="web", public_key=ed25519_line())
    anonymous = APIClient()
    for response in (anonymous.get(KEYS), anonymous.post(KEYS, {"public_key": ed25519_line()}, format="json"),
                     anonymous.get(f"{KEYS}{key.pk}/"), anonymous.delete(f"{KEYS}{key.pk}/")):
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
        assert response.json()["code"] == "not_authenticated"
    assert SSHKey.objects.count() == 1


def test_the_api_root_and_the_schema_name_the_endpoints(alice, client):
    assert api_for(alice).get("/api/").json()["keys"] == "http://testserver/api/keys/"
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert set(schema["paths"]["/api/keys/"]) >= {"get", "post"}
    assert set(schema["paths"]["/api/keys/{id}/"]) >= {"get", "delete"}
    assert set(schema["paths"]["/api/keys/"]["post"]["responses"]) >= {"201", "400", "409"}
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")

"""REST API glue defects: hostile bodies, client addresses behind proxies, errors always in JSON."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}
DEEP_JSON = "[" * 5000 + "]" * 5000


def _client(user=None) -> APIClient:
    """A client that turns server errors into 500 responses (as a real server does) instead of raising."""
    client = APIClient(raise_request_exception=False)
    if user is not None:
        client.force_authenticate(user)
    return client


def _assert_parse_error(response) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "parse_error"
    assert body["detail"] == "JSON parse error - the body is nested too deeply."


# --- 1. a JSON body nested 5,000 levels deep ------------------------------------------------------

def test_deeply_nested_json_to_the_token_endpoint_is_a_parse_error_without_logging_in(db):
    _assert_parse_error(_client().post("/api/auth/token/", DEEP_JSON, content_type="application/json"))


def test_deeply_nested_json_to_vm_endpoints_is_a_parse_error(alice, test_host):
    client = _client(alice)
    vm = client.post("/api/vms/", {"name": "deep-1", **SMALL}, format="json").json()["vm"]

    _assert_parse_error(client.post("/api/vms/", DEEP_JSON, content_type="application/json"))
    _assert_parse_error(client.patch(f"/api/vms/{vm['id']}/", DEEP_JSON, content_type="application/json"))
    _assert_parse_error(client.post(f"/api/vms/{vm['id']}/actions/", DEEP_JSON, content_type="application/json"))
    _assert_parse_error(client.post(f"/api/vms/{vm['id']}/snapshots/", DEEP_JSON,
                                    content_type="application/json"))
    assert list(VM.objects.values_list("name", flat=True)) == ["deep-1"]


def test_deeply_nested_text_in_form_and_multipart_bodies_is_just_a_bad_value(alice, test_host):
    client = _client(alice)

    form = client.post("/api/vms/", "name=" + "[" * 5000, content_type="application/x-www-form-urlencoded")
    multipart = client.post("/api/vms/", {"name": "[" * 5000})
    token = _client().post("/api/auth/token/", {"username": "[" * 5000, "password": "]" * 5000})

    for response in (form, multipart):
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid"
        assert response.json()["detail"].startswith("Name is too long (5000 characters")
    assert token.status_code == 400, token.content
    assert token.json()["code"] == "invalid"
    assert token.json()["detail"] == "Unable to log in with provided credentials."

"""REST API glue defects: hostile bodies, client addresses behind proxies, errors always in JSON."""

from __future__ import annotations

import itertools

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from portal.net import client_ip, client_label
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}
DEEP_JSON = "[" * 5000 + "]" * 5000


@pytest.fixture(autouse=True)
def _fresh_throttle():
    """The token endpoint's throttle counts in the process-wide cache: start and end with it empty."""
    cache.clear()
    yield
    cache.clear()


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


# --- 2. X-Forwarded-For counts only behind trusted proxies -----------------------------------------

_GUESSES = itertools.count()


def _guess(client: APIClient, forwarded_for: str):
    # A new username each time: the per-address throttle is under test, not the per-username lockout
    # (a username's fifth failure from one address locks it: tests/portal/test_login_lockout.py).
    return client.post("/api/auth/token/", {"username": f"user-{next(_GUESSES)}", "password": "guess"},
                       format="json", HTTP_X_FORWARDED_FOR=forwarded_for)


def test_a_new_x_forwarded_for_on_each_request_does_not_reset_the_token_throttle(alice):
    client = _client()
    for n in range(10):
        assert _guess(client, f"10.0.0.{n}").status_code == 400

    refused = _guess(client, "10.0.1.1")

    assert refused.status_code == 429, refused.content
    assert refused.json()["code"] == "throttled"
    assert "Expected available in" in refused.json()["detail"]


@override_settings(TRUSTED_PROXIES=1)
def test_behind_one_trusted_proxy_the_address_it_forwards_is_throttled_not_the_clients_own(alice):
    client = _client()
    # The proxy appends the address it saw; whatever the client wrote to the left is not trusted.
    for n in range(10):
        assert _guess(client, f"10.0.0.{n}, 203.0.113.7").status_code == 400

    refused = _guess(client, "10.0.1.1, 203.0.113.7")
    other_client = _guess(client, "203.0.113.7, 198.51.100.9")

    assert refused.status_code == 429 and refused.json()["code"] == "throttled"
    assert other_client.status_code == 400
    assert other_client.json()["detail"] == "Unable to log in with provided credentials."


def test_the_client_address_rule():
    assert client_ip(remote_addr="192.0.2.1", forwarded_for="10.9.9.9", trusted_proxies=0) == "192.0.2.1"
    assert client_ip(remote_addr="192.0.2.1", forwarded_for=None, trusted_proxies=1) == "192.0.2.1"
    assert client_ip(remote_addr="192.0.2.1", forwarded_for="  ", trusted_proxies=1) == "192.0.2.1"
    assert client_ip(remote_addr="192.0.2.1", forwarded_for="6.6.6.6, 203.0.113.7",
                     trusted_proxies=1) == "203.0.113.7"
    assert client_ip(remote_addr="192.0.2.1", forwarded_for="6.6.6.6, 203.0.113.7, 10.0.0.2",
                     trusted_proxies=2) == "203.0.113.7"
    with override_settings(TRUSTED_PROXIES=0):
        assert client_ip(remote_addr="192.0.2.1", forwarded_for="10.9.9.9") == "192.0.2.1"


def test_console_audit_labels_use_the_same_rule():
    """The console relays (Channels and websockify) record the client through portal.net.client_label."""
    with override_settings(TRUSTED_PROXIES=0):
        assert client_label(peer=("192.0.2.1", 50123), forwarded_for="6.6.6.6") == "192.0.2.1:50123"
        assert client_label(peer=None, forwarded_for="6.6.6.6") == ""
    with override_settings(TRUSTED_PROXIES=1):
        assert client_label(peer=("192.0.2.1", 50123), forwarded_for="6.6.6.6, 203.0.113.7") == "203.0.113.7"
        assert client_label(peer=("192.0.2.1", 50123), forwarded_for=None) == "192.0.2.1:50123"


# --- 3. API errors are JSON in every mode, DEBUG included ------------------------------------------

BIG = "x" * 2000


def _assert_too_large(response) -> None:
    assert response.status_code == 413, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "too_large", "detail": "The request body is too large (at most 1000 bytes)."}


@override_settings(DEBUG=True, DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_an_oversized_body_is_a_json_413_not_the_debug_page(alice, test_host):
    client = _client(alice)

    _assert_too_large(client.post("/api/vms/", {"name": "big-1", "description": BIG}, format="json"))
    _assert_too_large(client.post("/api/vms/", {"name": "big-1", "description": BIG}))  # multipart
    _assert_too_large(client.post("/api/vms/", "name=big-1&description=" + BIG,
                                  content_type="application/x-www-form-urlencoded"))
    _assert_too_large(_client().post("/api/auth/token/", "username=alice&password=" + BIG,
                                     content_type="application/x-www-form-urlencoded"))
    assert not VM.objects.exists()


@override_settings(DEBUG=True, DATA_UPLOAD_MAX_NUMBER_FIELDS=10)
def test_too_many_form_fields_is_a_json_400(alice, test_host):
    body = "&".join(f"f{n}=1" for n in range(20))

    response = _client(alice).post("/api/vms/", body, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 400, response.content[:300]
    assert response.json() == {"code": "bad_request", "detail": "Too many fields in the request (at most 10)."}


@override_settings(DEBUG=True)
def test_errors_django_answers_itself_under_api_are_json_too(alice, test_host, monkeypatch):
    client = _client(alice)

    missing = client.get("/api/no-such-thing/")
    bad_host = client.get("/api/vms/", HTTP_HOST="evil.example")
    monkeypatch.setattr("vms.api.views.vm_list", lambda **kw: 1 / 0)
    crash = client.get("/api/vms/")

    assert (missing.status_code, missing.json()) == (404, {"code": "not_found", "detail": "Not found."})
    assert (bad_host.status_code, bad_host.json()) == (400, {"code": "bad_request", "detail": "Bad request."})
    assert (crash.status_code, crash.json()) == (500, {"code": "server_error", "detail": "Internal server error."})
    assert "Traceback" not in crash.content.decode()


@override_settings(DEBUG=True)
def test_pages_outside_the_api_and_the_browsable_api_keep_their_html(alice, test_host):
    client = _client(alice)

    page = client.get("/no-such-page/")
    browsable = client.get("/api/vms/999999/", HTTP_ACCEPT="text/html")

    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    assert browsable.status_code == 404 and browsable["Content-Type"].startswith("text/html")
    assert "VM 999999 not found." in browsable.content.decode()

"""Web login brute-force protection (issue #13 part 4): django-axes locks a username for one client
address after PORTAL_LOGIN_FAILURE_LIMIT failures, with a clear form error, a 429 and an audit row; the
address is portal.net's trusted-proxies rule, never a raw X-Forwarded-For."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, RequestFactory, override_settings

from portal.login_guard import lockout_response
from portal.models import AuditEvent

LIMIT = 5  # PORTAL_LOGIN_FAILURE_LIMIT's default
LOCKED = "Too many failed sign-in attempts for this username from your address. Try again in 15 minutes"


def _login(client: Client, password: str, *, path: str = "/login/", username: str = "alice", **headers):
    return client.post(path, {"username": username, "password": password}, **headers)


@pytest.mark.django_db
def test_repeated_failures_lock_the_username_for_that_address_with_a_form_error_and_an_audit_row(alice):
    client = Client(REMOTE_ADDR="192.0.2.10")
    for _ in range(LIMIT - 1):
        wrong = _login(client, "guess")
        assert wrong.status_code == 200
        assert "Your username and password didn't match" in wrong.content.decode()

    locked = _login(client, "guess")
    assert locked.status_code == 429
    assert LOCKED in locked.content.decode()
    assert '<form' in locked.content.decode() and int(locked["Retry-After"]) == 900

    # Even the right password is refused now, from this address, on the portal's and the admin's login.
    right = _login(client, "pw-alice")
    assert right.status_code == 429 and LOCKED in right.content.decode()
    assert "_auth_user_id" not in client.session
    admin = _login(client, "pw-alice", path="/admin/login/")
    assert admin.status_code == 429 and LOCKED in admin.content.decode()

    event = AuditEvent.objects.filter(action="login.locked_out").order_by("at", "id").first()
    assert event is not None and event.target_name == "alice" and event.outcome == "denied"
    assert event.data["client"] == "192.0.2.10" and "192.0.2.10" in event.message

    # Another address is not locked: alice signs in from there.
    elsewhere = _login(Client(REMOTE_ADDR="198.51.100.20"), "pw-alice")
    assert elsewhere.status_code == 302 and elsewhere["Location"] == "/"


@pytest.mark.django_db
def test_a_good_login_before_the_limit_resets_the_count(alice):
    client = Client(REMOTE_ADDR="192.0.2.11")
    for _ in range(LIMIT - 1):
        assert _login(client, "guess").status_code == 200
    assert _login(client, "pw-alice").status_code == 302
    client.logout()
    for _ in range(LIMIT - 1):
        assert _login(client, "guess").status_code == 200
    assert _login(client, "pw-alice").status_code == 302


@pytest.mark.django_db
def test_a_client_cannot_escape_the_lockout_by_writing_x_forwarded_for(alice):
    client = Client(REMOTE_ADDR="192.0.2.12")
    for n in range(LIMIT):
        _login(client, "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")

    again = _login(client, "pw-alice", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert again.status_code == 429 and LOCKED in again.content.decode()


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_the_address_it_forwards_is_the_one_locked(alice):
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    for n in range(LIMIT):
        _login(proxy, "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 203.0.113.7")

    locked = _login(proxy, "pw-alice", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    other = _login(proxy, "pw-alice", HTTP_X_FORWARDED_FOR="203.0.113.7, 198.51.100.9")

    assert locked.status_code == 429
    assert other.status_code == 302
    assert AuditEvent.objects.filter(action="login.locked_out", data__client="203.0.113.7").exists()


@pytest.mark.django_db
@override_settings(AXES_FAILURE_LIMIT=2)
def test_the_limit_is_a_setting_and_the_api_token_endpoint_counts_and_refuses_too(alice):
    """A username locked out on the web login gets no API token either, and password guesses on the token
    endpoint count towards the same lockout (they went around it: trial finding)."""
    client = Client(REMOTE_ADDR="192.0.2.13")
    assert _login(client, "guess").status_code == 200
    assert _login(client, "guess").status_code == 429

    answer = client.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"})  # the right one
    assert answer.status_code == 429
    assert answer.json()["code"] == "locked_out" and "Too many failed sign-in attempts" in answer.json()["detail"]
    assert "token" not in answer.json()

    other = Client(REMOTE_ADDR="192.0.2.14")
    assert other.post("/api/auth/token/", {"username": "alice", "password": "guess"}).status_code == 400
    locked = other.post("/api/auth/token/", {"username": "alice", "password": "guess"})
    assert locked.status_code == 429 and locked.json()["code"] == "locked_out"
    assert _login(other, "pw-alice").status_code == 429  # the web login of that address is locked as well
    assert Client(REMOTE_ADDR="192.0.2.15").post(
        "/api/auth/token/", {"username": "alice", "password": "pw-alice"}).json()["token"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_the_refusal_renders_the_login_page_even_without_the_views_response(path):
    """axes' async middleware (daphne, uvicorn) hands the lockout callable the credentials instead of the
    view's response: the login page is then rendered afresh, with the same error."""


    request = RequestFactory().post(path, {"username": "alice", "password": "guess"})
    request.user, request.session = AnonymousUser(), SessionStore()

    response = lockout_response(request, {"username": "alice"}, None)

    assert response.status_code == 429 and LOCKED in response.content.decode()
    assert 'name="password"' in response.content.decode()

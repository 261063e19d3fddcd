"""Found trying the production setup as an operator (issue #13): every response carries its request id,
also those the outer middleware answers itself (HTTPS redirect, bad Host header), and the JSON log
lines hold no terminal colour codes (uvicorn's `color_message`)."""

from __future__ import annotations

import json
import logging
import re
from base64 import b64encode
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import Client, override_settings
from django.urls import path
from pythonjsonlogger.json import JsonFormatter

from portal.logcontext import LogContext

HEX_ID = re.compile(r"^[0-9a-f]{32}$")

pytestmark = pytest.mark.django_db


@override_settings(SECURE_SSL_REDIRECT=True)
def test_the_https_redirect_carries_a_request_id():
    response = Client().get("/login/")
    assert response.status_code == 301 and response["Location"].startswith("https://")
    assert HEX_ID.match(response.get("X-Request-ID", ""))


def test_a_refused_host_header_is_answered_with_a_request_id():
    response = Client().get("/login/", HTTP_HOST="evil.example.org")
    assert response.status_code == 400
    assert HEX_ID.match(response.get("X-Request-ID", ""))


def test_json_log_lines_carry_no_terminal_colour_codes():
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]",
                               (42,), None)
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"  # what uvicorn adds
    LogContext().filter(record)
    options = {k: v for k, v in settings.LOGGING["formatters"]["json"].items() if k != "()"}
    line = JsonFormatter(**options).format(record)

    assert "\x1b" not in line and "\\u001b" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "Started server process [42]" and "color_message" not in parsed
    assert parsed["logger"] == "uvicorn.error" and "request_id" in parsed


# --- check --deploy: a plain-HTTP base URL while the portal insists on HTTPS ---------------------------

def _deploy_warnings() -> list[str]:

    return [m.id for m in run_checks(include_deployment_checks=True) if m.id and m.id.startswith("portal.")]


@override_settings(PORTAL_BASE_URL="http://portal.example.org", SESSION_COOKIE_SECURE=True,
                   CSRF_COOKIE_SECURE=True, SECURE_SSL_REDIRECT=False)
def test_check_deploy_warns_of_an_http_base_url_with_secure_cookies():
    assert _deploy_warnings() == ["portal.W001"]


@pytest.mark.parametrize("base_url,secure", [("https://portal.example.org", True),
                                             ("http://127.0.0.1:8000", False)])
def test_check_deploy_is_quiet_when_the_base_url_fits_the_https_settings(base_url, secure):
    with override_settings(PORTAL_BASE_URL=base_url, SESSION_COOKIE_SECURE=secure, CSRF_COOKIE_SECURE=secure,
                           SECURE_SSL_REDIRECT=secure):
        assert _deploy_warnings() == []


# --- forged cursors: a clear 4xx, never a 500 -----------------------------------------------------------

@pytest.mark.parametrize("url,position", [
    ("/api/vms/", "a\x00b"),          # PostgreSQL refuses NUL in text: was a DataError (500)
    ("/api/jobs/", "not-a-date"),     # the job list's position is a time: was a ValidationError (500)
])
def test_a_forged_cursor_position_is_an_invalid_cursor_not_a_500(client_for, alice, url, position):

    cursor = quote(b64encode(f"p={position}".encode()).decode())
    response = client_for(alice).get(f"{url}?pagination=cursor&cursor={cursor}")

    assert response.status_code == 404, response.content
    assert response.json() == {"detail": "Invalid cursor", "code": "not_found"}



# --- an API error turned into JSON is logged once, not twice -------------------------------------------

def _broken_view(request):
    raise RuntimeError("boom")


urlpatterns = [path("api/broken/", _broken_view)]


@override_settings(ROOT_URLCONF=__name__)
def test_an_api_server_error_turned_into_json_is_logged_once(caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = Client(raise_request_exception=False).get("/api/broken/")

    assert response.status_code == 500 and response.json()["code"] == "server_error"
    assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == [
        "Internal Server Error: /api/broken/"]

"""Hardened settings (issue #13 part 4): production reads its knobs from the environment, refuses to start
without its secrets, turns HTTPS protections on, sends a Content-Security-Policy, and `check --deploy`
is clean with the production environment example (deploy/portal.env.example)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from tests.support import MANAGE

ENV_EXAMPLE = settings.BASE_DIR / "deploy" / "portal.env.example"

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({k: getattr(s, k, None) for k in (
    "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SECURE_PROXY_SSL_HEADER", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "CONSOLE_ALLOWED_ORIGINS",
    "SECURE_CSP", "SECURE_CSP_REPORT_ONLY")}, default=str))
"""


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor != "postgresql":
        return ""
    auth = f"{s['USER']}:{s['PASSWORD']}@" if s["PASSWORD"] else f"{s['USER'] or 'postgres'}@"
    return f"postgresql://{auth}{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _example_env() -> dict[str, str]:
    """deploy/portal.env.example's active lines."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _production_env(**overrides: str) -> dict[str, str]:
    """A clean process environment: the env example with a fresh secret, this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_") and k != "DJANGO_SETTINGS_MODULE"}
    env.update(_example_env())
    env.update(PORTAL_SECRET_KEY=secrets.token_urlsafe(50), PORTAL_DATABASE_URL=_database_url(),
               DJANGO_SETTINGS_MODULE="portal.settings.base")
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120)


def _settings_of(env: dict[str, str]) -> dict:
    done = _run([sys.executable, "-c", PRINT_SETTINGS], env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.django_db
def test_check_deploy_reports_no_issue_with_the_production_environment_example():
    done = _run([*MANAGE, "check", "--deploy", "--fail-level", "WARNING"], _production_env())

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr


@pytest.mark.django_db
def test_production_settings_come_from_the_environment_with_https_on():
    prod = _settings_of(_production_env())
    assert prod["DEBUG"] is False
    assert prod["SECURE_SSL_REDIRECT"] is True and prod["SECURE_HSTS_SECONDS"] == 31536000
    assert prod["SESSION_COOKIE_SECURE"] is True and prod["CSRF_COOKIE_SECURE"] is True
    assert prod["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]  # PORTAL_TRUSTED_PROXIES=1
    assert prod["ALLOWED_HOSTS"] == ["portal.example.org", "127.0.0.1", "localhost"]
    # Origins default to the portal's own URL only (not the demo's http://127.0.0.1:8000).
    assert prod["CSRF_TRUSTED_ORIGINS"] == ["https://portal.example.org"]
    assert prod["CONSOLE_ALLOWED_ORIGINS"] == ["https://portal.example.org"]
    assert "'self'" in prod["SECURE_CSP"]["script-src"]
    assert "wss://portal.example.org" in prod["SECURE_CSP"]["connect-src"]

    # Without a trusted proxy a client's own X-Forwarded-Proto never makes a request "secure".
    direct = _settings_of(_production_env(PORTAL_TRUSTED_PROXIES="0", PORTAL_PROXY_SSL_HEADER=None))
    assert direct["SECURE_PROXY_SSL_HEADER"] is None
    # Each knob turns its protection off when an operator asks (e.g. TLS handled elsewhere).
    relaxed = _settings_of(_production_env(PORTAL_SECURE_SSL_REDIRECT="0", PORTAL_SECURE_COOKIES="0",
                                           PORTAL_CSP_REPORT_ONLY="1"))
    assert relaxed["SECURE_SSL_REDIRECT"] is False and relaxed["SESSION_COOKIE_SECURE"] is False
    assert relaxed["SECURE_CSP"] == {} and "'self'" in relaxed["SECURE_CSP_REPORT_ONLY"]["default-src"]


@pytest.mark.parametrize("missing", ["PORTAL_SECRET_KEY", "PORTAL_ALLOWED_HOSTS", "PORTAL_BASE_URL"])
def test_production_refuses_to_start_without_a_required_setting_and_says_which(missing):
    done = _run([*MANAGE, "check"], _production_env(**{missing: None}))

    assert done.returncode != 0
    assert f"{missing} must be set: DEBUG is off (production; PORTAL_DEBUG=1 asks for a development portal)" \
        in done.stderr, done.stderr[-3000:]


def test_production_says_so_when_debug_is_not_a_boolean():
    done = _run([*MANAGE, "check"], _production_env(PORTAL_DEBUG="maybe"))
    assert done.returncode != 0 and "PORTAL_DEBUG must be a boolean (got 'maybe')" in done.stderr


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_without_inline_scripts(client):
    response = client.get("/login/")

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    script_src = next(part for part in policy.split(";") if part.strip().startswith("script-src")).split()
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert b"<script>" not in response.content


@pytest.mark.django_db
def test_the_api_docs_page_alone_may_load_swagger_ui_from_its_cdn(client):
    docs = client.get("/api/docs/")
    login = client.get("/login/")

    assert docs.status_code == 200
    assert "https://cdn.jsdelivr.net" in docs["Content-Security-Policy"]
    assert "cdn.jsdelivr.net" not in login["Content-Security-Policy"]
    assert b"<script>" not in docs.content  # the split view serves its start-up script from the portal

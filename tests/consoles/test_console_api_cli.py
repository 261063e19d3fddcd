"""One-time console URLs with an API token (POST /api/vms/{id}/console/) and from `manage.py vm console`."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from consoles.models import ConsoleLink
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vm(test_host, alice):
    from vms.services import vm_create

    return vm_create(actor=alice, via="web", name="web1", vcpus=1, memory_mib=128, disk_gib=1).vm


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_api_token_gets_a_one_time_console_url(vm, alice, settings):
    settings.CONSOLE_LINK_TTL_SECONDS = 300
    response = _api(alice).post(f"/api/vms/{vm.pk}/console/", {"kind": "terminal"}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"url", "kind", "expires_at", "expires_in"}
    assert re.fullmatch(r"http://testserver/consoles/link/[\w-]{40,}/", body["url"]), body["url"]
    assert body["kind"] == "terminal" and body["expires_in"] == 300
    link = ConsoleLink.objects.get()
    assert timedelta(seconds=295) < link.expires_at - timezone.now() <= timedelta(seconds=300)
    assert AuditEvent.objects.get(action="console.link").via == "api"

    # The same rules as Slack's links: the user's own browser, once.
    path = body["url"].removeprefix("http://testserver")
    browser = _browser(alice)
    opened = browser.get(path)
    assert opened.status_code == 302 and opened["Location"] == f"/consoles/vm/{vm.pk}/terminal/"
    again = browser.get(path)
    assert again.status_code == 410 and b"already used" in again.content


def test_the_default_kind_is_the_screen_and_the_vm_can_be_named_by_uuid(vm, alice):
    response = _api(alice).post(f"/api/vms/{vm.uuid}/console/")
    assert response.status_code == 201 and response.json()["kind"] == "screen"


def test_console_api_errors_are_json_never_500(vm, alice, bob, client):
    api = _api(alice)
    bad = api.post(f"/api/vms/{vm.pk}/console/", {"kind": "ssh"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid" and bad.json()["errors"] == {"kind": ['"ssh" is not a valid choice.']}
    other = _api(bob).post(f"/api/vms/{vm.pk}/console/")
    assert other.status_code == 404 and other.json() == {"code": "not_found", "detail": f"VM {vm.pk} not found."}
    assert api.post("/api/vms/999999/console/").status_code == 404
    anonymous = APIClient().post(f"/api/vms/{vm.pk}/console/")
    assert anonymous.status_code == 401
    assert api.get(f"/api/vms/{vm.pk}/console/").status_code == 405
    assert not ConsoleLink.objects.exists()


def test_the_ticket_rate_answers_429_with_retry_after_on_the_api(vm, alice, settings):
    settings.CONSOLE_TICKET_RATE = "1/minute"
    api = _api(alice)
    assert api.post(f"/api/vms/{vm.pk}/console/").status_code == 201
    response = api.post(f"/api/vms/{vm.pk}/console/")
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "console_rate_limited" and body["detail"].startswith("Too many console requests")
    assert response["Retry-After"] == str(body["retry_after"])


def test_the_endpoint_is_in_the_openapi_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/vms/{id}/console/"]["post"]
    assert operation["operationId"] == "vms_console_create"
    assert set(operation["responses"]) >= {"201", "400", "404", "429"}
    assert "/vm console" in operation["description"]


def test_schema_still_generates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_the_cli_prints_one_time_urls(vm, alice, settings):
    settings.PORTAL_BASE_URL = "https://portal.example.org/"
    out = io.StringIO()
    call_command("vm", "--user", "alice", "console", "web1", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["screen", "terminal"]
    urls = [line.split()[1] for line in lines[:2]]
    assert all(re.fullmatch(r"https://portal\.example\.org/consoles/link/[\w-]{40,}/", u) for u in urls), urls
    assert lines[2].startswith("Each URL works once, for alice, until ")
    assert set(AuditEvent.objects.filter(action="console.link").values_list("via", flat=True)) == {"cli"}

    out = io.StringIO()
    call_command("vm", "--user", "alice", "console", "web1", "--kind", "terminal", stdout=out)
    url = out.getvalue().splitlines()[0].split()[1]
    opened = _browser(alice).get(url.removeprefix("https://portal.example.org"))
    assert opened["Location"] == f"/consoles/vm/{vm.pk}/terminal/"


def test_the_cli_refuses_in_plain_words(vm, alice, bob):
    with pytest.raises(CommandError, match=r"Unknown console kind 'ssh' \(screen or terminal\)"):
        call_command("vm", "--user", "alice", "console", "web1", "--kind", "ssh", stdout=io.StringIO())
    with pytest.raises(CommandError, match="No VM named 'web1'"):
        call_command("vm", "--user", "bob", "console", "web1", stdout=io.StringIO())

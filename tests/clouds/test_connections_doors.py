"""The doors of cloud connections: REST API (staff only, the secret write-only and never in a response),
the admin (write-only secret field, per-auth-type refusals on the form, Check connection), manage.py cloud;
and checks against the harness's real Glance and Neutron, directly and through a clouds.yaml entry."""

from __future__ import annotations

import io
import json
import sys

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from clouds import services
from clouds.models import Cloud
from portal.models import AuditEvent, Job
from tests.clouds.fake_keystone import FakeKeystone
from tests.clouds.test_connections import SECRET, closed_port

pytestmark = pytest.mark.django_db

URL = "/api/clouds/"


def body_of(response) -> str:
    return response.content.decode()


def keystone_payload(url: str, **extra):
    return {"name": "lab", "auth_type": "password", "auth_url": url, "username": "demo", "project_name": "demo",
            "secret": SECRET, **extra}


def test_api_create_list_get_patch_delete_never_returns_the_secret(admin_user, client_for):
    api = client_for(admin_user)
    created = api.post(URL, keystone_payload("https://keystone.example.org:5000/v3"), format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["has_secret"] and data["secret_source"] == "stored"
    assert "secret" not in data and "secret_encrypted" not in data
    stored = Cloud.objects.get(name="lab").secret_encrypted
    pk = data["id"]
    responses = [created, api.get(URL), api.get(f"{URL}{pk}/"), api.get(f"{URL}lab/"),
                 api.patch(f"{URL}{pk}/", {"description": "our lab", "secret": "new-" + SECRET}, format="json")]
    assert responses[4].status_code == 200 and responses[4].json()["description"] == "our lab"
    for response in responses:
        assert SECRET not in body_of(response) and stored[7:30] not in body_of(response)
    assert api.get(URL).json()["results"][0]["name"] == "lab"
    assert api.get(f"{URL}lab/").json()["id"] == pk
    refused = api.patch(f"{URL}{pk}/", {"name": "other"}, format="json")
    assert refused.status_code == 400 and "renamed" in refused.json()["detail"]
    assert api.delete(f"{URL}{pk}/").status_code == 204
    assert api.get(f"{URL}{pk}/").status_code == 404
    assert SECRET not in " ".join(AuditEvent.objects.values_list("message", flat=True))


def test_api_validation_errors_name_their_field(admin_user, client_for):
    api = client_for(admin_user)
    answer = api.post(URL, {"name": "x", "auth_type": "none"}, format="json")
    assert answer.status_code == 400 and "image_endpoint" in answer.json()["errors"]
    answer = api.post(URL, keystone_payload("https://k.example.org/v3", secret=""), format="json")
    assert answer.status_code == 400 and "secret" in answer.json()["errors"]


def test_api_is_for_administrators_only(alice, admin_user, client_for):
    cloud = services.cloud_create(actor=admin_user, via="cli", name="c", auth_type="none", image_endpoint="http://x")
    api = client_for(alice)
    assert api.get(URL).status_code == 403
    assert api.get(f"{URL}{cloud.pk}/").status_code == 403
    assert api.post(URL, {"name": "d", "auth_type": "none", "image_endpoint": "http://x"},
                    format="json").status_code == 403
    assert api.patch(f"{URL}{cloud.pk}/", {"description": "x"}, format="json").status_code == 403
    assert api.delete(f"{URL}{cloud.pk}/").status_code == 403
    assert api.post(f"{URL}{cloud.pk}/check/").status_code == 403
    from rest_framework.test import APIClient
    assert APIClient().get(URL).status_code in (401, 403)


def test_api_check_with_wrong_credentials_and_busy_delete(admin_user, client_for):
    api = client_for(admin_user)
    with FakeKeystone() as keystone:
        pk = api.post(URL, keystone_payload(keystone.url + "/v3"), format="json").json()["id"]
        answer = api.post(f"{URL}{pk}/check/")
    assert answer.status_code == 200
    data = answer.json()
    assert data["ok"] is False and "refused the credentials (401)" in data["message"]
    assert data["cloud"]["last_check_ok"] is False and SECRET not in body_of(answer)
    Job.objects.create(kind="glance.publish", status="pending", params={"cloud_id": pk})
    busy = api.delete(f"{URL}{pk}/")
    assert busy.status_code == 409 and "still running" in busy.json()["detail"]


def test_admin_secret_is_write_only_and_refusals_show_on_the_form(admin_user):
    web = Client()
    web.force_login(admin_user)
    add = web.get("/admin/clouds/cloud/add/")
    assert add.status_code == 200 and 'type="password"' in body_of(add) and "clouds/cloud_form.js" in body_of(add)
    form = {"name": "lab", "description": "", "auth_type": "password", "auth_url": "https://k.example.org/v3",
            "username": "demo", "user_domain_name": "Default", "project_name": "", "project_domain_name": "Default",
            "verify_tls": "on", "secret": SECRET}
    refused = web.post("/admin/clouds/cloud/add/", form)
    assert refused.status_code == 200 and "Give the project." in body_of(refused)
    assert SECRET not in body_of(refused)  # the password field is not filled in again
    assert not Cloud.objects.exists()
    saved = web.post("/admin/clouds/cloud/add/", {**form, "project_name": "demo"})
    assert saved.status_code == 302, body_of(saved)[:3000]
    cloud = Cloud.objects.get(name="lab")
    stored = cloud.secret_encrypted
    page = web.get(f"/admin/clouds/cloud/{cloud.pk}/change/")
    html = body_of(page)
    assert "stored (encrypted)" in html and SECRET not in html and stored[7:40] not in html
    assert "Leave blank to keep" in html and "Clear the stored secret" in html
    # blank secret keeps the stored one
    kept = web.post(f"/admin/clouds/cloud/{cloud.pk}/change/", {**form, "project_name": "demo", "secret": "",
                                                                "description": "changed"})
    assert kept.status_code == 302
    cloud.refresh_from_db()
    assert cloud.secret_encrypted == stored and cloud.description == "changed"
    listing = web.get("/admin/clouds/cloud/")
    assert SECRET not in body_of(listing) and "not checked" in body_of(listing)
    history = web.get(f"/admin/clouds/cloud/{cloud.pk}/history/")
    assert SECRET not in body_of(history)


def test_admin_check_connection_action_shows_the_result(admin_user, settings):
    settings.CLOUDS_API_TIMEOUT_SECONDS = 3
    cloud = services.cloud_create(actor=admin_user, via="cli", name="down", auth_type="none",
                                  image_endpoint=f"http://127.0.0.1:{closed_port()}")
    web = Client()
    web.force_login(admin_user)
    answer = web.post("/admin/clouds/cloud/", {"action": "check_connection", "_selected_action": [cloud.pk]},
                      follow=True)
    html = body_of(answer)
    assert "glance: the cloud down could not be reached while trying to list glance images" in html.lower()
    cloud.refresh_from_db()
    assert cloud.last_check_ok is False
    assert "failed" in body_of(web.get("/admin/clouds/cloud/"))


def test_cli_add_with_secret_from_stdin_show_check_remove(admin_user, monkeypatch, settings, capsys):
    settings.CLOUDS_API_TIMEOUT_SECONDS = 3
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET + "\n"))
    out = io.StringIO()
    with FakeKeystone() as keystone:
        call_command("cloud", "--user", admin_user.username, "add", "lab", "--auth", "password", "--auth-url",
                     keystone.url + "/v3", "--username", "demo", "--project", "demo", "--secret-stdin", stdout=out)
        assert "Connected cloud lab" in out.getvalue()
        cloud = Cloud.objects.get(name="lab")
        from clouds.secrets import decrypt
        assert decrypt(cloud.secret_encrypted) == SECRET
        call_command("cloud", "--user", admin_user.username, "show", "lab", stdout=out)
        call_command("cloud", "--user", admin_user.username, "list", stdout=out)
        with pytest.raises(CommandError, match="refused the credentials") as failed:
            call_command("cloud", "--user", admin_user.username, "check", "lab", stdout=out)
        assert failed.value.returncode == 1
    assert "secret: stored (encrypted)" in out.getvalue() and SECRET not in out.getvalue()
    call_command("cloud", "--user", admin_user.username, "update", "lab", "--secret-env", "LAB_PW", stdout=out)
    cloud.refresh_from_db()
    assert cloud.secret_env == "LAB_PW" and cloud.secret_encrypted == ""
    call_command("cloud", "--user", admin_user.username, "remove", "lab", stdout=out)
    assert not Cloud.objects.exists()


def test_cli_refuses_non_admins_and_bad_input(alice, admin_user):
    with pytest.raises(CommandError) as refused:
        call_command("cloud", "--user", alice.username, "list")
    assert refused.value.returncode == 4
    with pytest.raises(CommandError, match="Without Keystone") as invalid:
        call_command("cloud", "--user", admin_user.username, "add", "x", "--auth", "none")
    assert invalid.value.returncode == 2


def test_check_against_the_real_glance_and_neutron(admin_user, glance_server, neutron_server, client_for):
    api = client_for(admin_user)
    pk = api.post(URL, {"name": "harness", "auth_type": "none", "image_endpoint": glance_server.url,
                        "network_endpoint": neutron_server.url}, format="json").json()["id"]
    answer = api.post(f"{URL}{pk}/check/").json()
    assert answer["ok"] is True, answer
    assert answer["services"] == {"glance": "ok", "neutron": "ok"}
    assert answer["message"] == "Connected: Glance ok; Neutron ok"
    assert Cloud.objects.get(pk=pk).last_check_ok is True


def test_clouds_yaml_entry_checks_ok(admin_user, glance_server, neutron_server, tmp_path, monkeypatch):
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": {"harness-yaml": {
        "auth_type": "none", "auth": {"endpoint": glance_server.url},
        "image_endpoint_override": glance_server.url, "network_endpoint_override": neutron_server.url}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    cloud = services.cloud_create(actor=admin_user, via="cli", name="from-yaml", auth_type="clouds_yaml",
                                  clouds_yaml_name="harness-yaml")
    result = services.cloud_check(actor=admin_user, via="cli", cloud=cloud)
    assert result.ok, result.message
    assert result.services == {"glance": "ok", "neutron": "ok"}
    missing = services.cloud_create(actor=admin_user, via="cli", name="missing", auth_type="clouds_yaml",
                                    clouds_yaml_name="no-such-entry")
    result = services.cloud_check(actor=admin_user, via="cli", cloud=missing)
    assert not result.ok and "no-such-entry" in result.message, result.message
    assert json.dumps(result.services) == "{}"

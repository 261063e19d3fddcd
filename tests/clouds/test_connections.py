"""Cloud connections (issue #15 part 1): secrets encrypted at rest and never echoed, validation per
authentication type, clear errors for wrong credentials (a fake Keystone on 127.0.0.1) and an unreachable
endpoint (a closed port on 127.0.0.1), application-credential kwargs, delete refused while a job runs."""

from __future__ import annotations

import socket
import time

import pytest
from django.db import connection as db

from clouds import secrets, services
from clouds.connection import connection_kwargs
from clouds.models import Cloud
from portal.exceptions import Conflict, PermissionDenied, ValidationFailed
from portal.models import AuditEvent, Job
from tests.clouds.fake_keystone import FakeKeystone

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-Pa55word-unique-7f1c"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once the socket is closed


def password_cloud(admin, url: str, name: str = "keystone", secret: str = SECRET) -> Cloud:
    return services.cloud_create(actor=admin, via="cli", name=name, auth_type="password", auth_url=url,
                                 username="demo", project_name="demo", secret=secret)


def audit_text() -> str:
    return " ".join(AuditEvent.objects.values_list("message", flat=True)) + " ".join(
        str(d) for d in AuditEvent.objects.values_list("data", flat=True))


def test_secret_is_encrypted_at_rest_and_decrypts(admin_user):
    cloud = password_cloud(admin_user, "https://keystone.example.org:5000/v3")
    with db.cursor() as cur:
        cur.execute("SELECT * FROM clouds_cloud WHERE id = %s", [cloud.pk])
        row = cur.fetchone()
    assert not any(SECRET in str(v) for v in row)  # no column holds the plaintext
    cloud.refresh_from_db()
    assert cloud.secret_encrypted.startswith("fernet:") and SECRET not in cloud.secret_encrypted
    assert secrets.decrypt(cloud.secret_encrypted) == SECRET
    assert connection_kwargs(cloud)["auth"]["password"] == SECRET
    assert SECRET not in audit_text()


def test_a_changed_key_asks_to_enter_the_secret_again(admin_user, settings):
    cloud = password_cloud(admin_user, "https://keystone.example.org:5000/v3")
    settings.SECRETS_KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="  # a different valid Fernet key
    with pytest.raises(ValidationFailed, match="enter it again"):
        secrets.decrypt(cloud.secret_encrypted)
    result = services.cloud_check(actor=admin_user, via="cli", cloud=cloud)
    assert not result.ok and "enter it again" in result.message
    assert Cloud.objects.get(pk=cloud.pk).last_check_ok is False


def test_secrets_key_setting_is_used_when_set(settings):
    settings.SECRETS_KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="
    stored = secrets.encrypt("x")
    settings.SECRETS_KEY = ""
    with pytest.raises(ValidationFailed, match="enter it again"):
        secrets.decrypt(stored)  # the key derived from SECRET_KEY is another key


def test_update_keeps_replaces_and_clears_the_secret(admin_user):
    cloud = password_cloud(admin_user, "https://keystone.example.org:5000/v3")
    first = Cloud.objects.get(pk=cloud.pk).secret_encrypted
    cloud = services.cloud_update(actor=admin_user, via="cli", cloud=cloud, description="lab")
    assert cloud.secret_encrypted == first  # unchanged when no secret is given
    cloud = services.cloud_update(actor=admin_user, via="cli", cloud=cloud, secret="other-secret")
    assert secrets.decrypt(cloud.secret_encrypted) == "other-secret"
    with pytest.raises(ValidationFailed, match="needs a password"):
        services.cloud_update(actor=admin_user, via="cli", cloud=cloud, clear_secret=True)
    cloud = services.cloud_update(actor=admin_user, via="cli", cloud=cloud, secret_env="CLOUD_PW")
    assert cloud.secret_encrypted == "" and cloud.secret_env == "CLOUD_PW"  # the env reference replaces it
    assert "other-secret" not in audit_text() and "Changed cloud keystone: secret" in audit_text()


def test_environment_held_secret(admin_user, monkeypatch):
    cloud = services.cloud_create(actor=admin_user, via="cli", name="env", auth_type="password",
                                  auth_url="https://k.example.org/v3", username="u", project_name="p",
                                  secret_env="VMPORTAL_TEST_CLOUD_PW")
    monkeypatch.delenv("VMPORTAL_TEST_CLOUD_PW", raising=False)
    with pytest.raises(ValidationFailed, match="VMPORTAL_TEST_CLOUD_PW .*not set"):
        connection_kwargs(cloud)
    monkeypatch.setenv("VMPORTAL_TEST_CLOUD_PW", "from-env")
    assert connection_kwargs(cloud)["auth"]["password"] == "from-env"
    assert cloud.secret_encrypted == ""


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"auth_type": "password", "username": "u", "project_name": "p"}, "auth_url", "Keystone's URL"),
    ({"auth_type": "password", "auth_url": "https://k/v3", "project_name": "p"}, "username", "user name"),
    ({"auth_type": "password", "auth_url": "https://k/v3", "username": "u"}, "project_name", "project"),
    ({"auth_type": "password", "auth_url": "https://k/v3", "username": "u", "project_name": "p"}, "secret",
     "password"),
    ({"auth_type": "v3applicationcredential", "auth_url": "https://k/v3", "secret": "x"},
     "application_credential_id", "application credential"),
    ({"auth_type": "none"}, "image_endpoint", "Without Keystone"),
    ({"auth_type": "clouds_yaml"}, "clouds_yaml_name", "clouds.yaml"),
    ({"auth_type": "none", "image_endpoint": "ftp://x"}, "image_endpoint", "not an http"),
    ({"auth_type": "none", "image_endpoint": "http://u:p@x"}, "image_endpoint", "own fields"),
    ({"auth_type": "none", "image_endpoint": "http://x", "ca_file": "rel/ca.pem"}, "ca_file", "absolute"),
    ({"auth_type": "none", "image_endpoint": "http://x", "secret_env": "lower"}, "secret_env", "upper-case"),
    ({"auth_type": "password", "auth_url": "https://k/v3", "username": "u", "project_name": "p", "secret": "x",
      "secret_env": "PW"}, "secret", "not both"),
    ({"auth_type": "kerberos"}, "auth_type", "must be one of"),
])
def test_validation_per_auth_type(admin_user, fields, field, words):
    with pytest.raises(ValidationFailed) as caught:
        services.cloud_create(actor=admin_user, via="cli", name="c1", **fields)
    assert field in caught.value.errors and words in caught.value.message
    assert not Cloud.objects.exists()


def test_bad_names_and_duplicates(admin_user):
    for bad in ("", "Upper", "1abc", "a" * 41, "with space"):
        with pytest.raises(ValidationFailed, match="lowercase"):
            services.cloud_create(actor=admin_user, via="cli", name=bad, auth_type="none", image_endpoint="http://x")
    services.cloud_create(actor=admin_user, via="cli", name="dup", auth_type="none", image_endpoint="http://x")
    with pytest.raises(ValidationFailed, match="exists already"):
        services.cloud_create(actor=admin_user, via="cli", name="dup", auth_type="none", image_endpoint="http://x")


def test_non_admins_are_refused(alice, admin_user):
    with pytest.raises(PermissionDenied):
        services.cloud_create(actor=alice, via="cli", name="c", auth_type="none", image_endpoint="http://x")
    cloud = services.cloud_create(actor=admin_user, via="cli", name="c", auth_type="none", image_endpoint="http://x")
    for call in (services.cloud_check, services.cloud_delete):
        with pytest.raises(PermissionDenied):
            call(actor=alice, via="cli", cloud=cloud)
    with pytest.raises(PermissionDenied):
        services.cloud_update(actor=alice, via="cli", cloud=cloud, description="x")


def test_application_credential_builds_the_right_kwargs_and_sends_them(admin_user):
    with FakeKeystone() as keystone:
        cloud = services.cloud_create(actor=admin_user, via="cli", name="appcred",
                                      auth_type="v3applicationcredential", auth_url=keystone.url + "/v3",
                                      application_credential_id="ac-123", secret=SECRET, region_name="RegionTwo",
                                      verify_tls=False)
        kwargs = connection_kwargs(cloud)
        assert kwargs["auth_type"] == "v3applicationcredential"
        assert kwargs["auth"] == {"auth_url": keystone.url + "/v3", "application_credential_id": "ac-123",
                                  "application_credential_secret": SECRET}
        assert kwargs["region_name"] == "RegionTwo" and kwargs["verify"] is False
        result = services.cloud_check(actor=admin_user, via="cli", cloud=cloud)
        sent = keystone.token_requests()
    assert sent and sent[0]["auth"]["identity"] == {
        "methods": ["application_credential"], "application_credential": {"id": "ac-123", "secret": SECRET}}
    assert not result.ok and "refused the credentials (401)" in result.message
    assert SECRET not in result.message and SECRET not in audit_text()


def test_wrong_credentials_give_a_clear_error(admin_user):
    with FakeKeystone() as keystone:
        cloud = password_cloud(admin_user, keystone.url + "/v3")
        result = services.cloud_check(actor=admin_user, via="cli", cloud=cloud)
        body = keystone.token_requests()[0]
    assert body["auth"]["identity"]["password"]["user"]["name"] == "demo"
    assert not result.ok
    assert result.message.startswith("The cloud keystone refused the credentials (401) while trying to sign in")
    stored = Cloud.objects.get(pk=cloud.pk)
    assert stored.last_check_ok is False and stored.last_check_at and "refused the credentials" in \
        stored.last_check_message
    event = AuditEvent.objects.get(action="cloud.check")
    assert event.outcome == AuditEvent.Outcome.FAILED and "401" in event.message
    assert SECRET not in stored.last_check_message and SECRET not in audit_text()


def test_unreachable_endpoint_fails_fast_and_clearly(admin_user, settings):
    settings.CLOUDS_API_TIMEOUT_SECONDS = 3
    port = closed_port()
    keystone = password_cloud(admin_user, f"http://127.0.0.1:{port}/v3", name="down-keystone")
    glance = services.cloud_create(actor=admin_user, via="cli", name="down-glance", auth_type="none",
                                   image_endpoint=f"http://127.0.0.1:{port}")
    for cloud in (keystone, glance):
        started = time.monotonic()
        result = services.cloud_check(actor=admin_user, via="cli", cloud=cloud)
        assert time.monotonic() - started < 15
        assert not result.ok
        assert f"The cloud {cloud.name} could not be reached" in result.message, result.message
        assert "check its URL and that it is up" in result.message
        assert SECRET not in result.message


def test_delete_is_refused_while_a_job_of_the_cloud_runs(admin_user):
    cloud = services.cloud_create(actor=admin_user, via="cli", name="busy", auth_type="none",
                                  image_endpoint="http://x")
    job = Job.objects.create(kind="glance.publish", status="running", params={"cloud_id": cloud.pk})
    with pytest.raises(Conflict, match="still running"):
        services.cloud_delete(actor=admin_user, via="cli", cloud=cloud)
    Job.objects.filter(pk=job.pk).update(status="succeeded")
    services.cloud_delete(actor=admin_user, via="cli", cloud=cloud)
    assert not Cloud.objects.exists()
    assert AuditEvent.objects.filter(action="cloud.delete", target_name="busy").exists()

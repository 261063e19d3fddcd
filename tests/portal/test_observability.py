"""Observability (issue #13 part 6): request ids, structured log lines that say who and what (request,
user, VM, job) with tokens still redacted, and the /healthz and /readyz probes."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.db import OperationalError
from django.test import Client, override_settings
from django.utils import timezone
from pythonjsonlogger.json import JsonFormatter

from cluster.choices import HostStatus
from cluster.models import Host
from portal.jobs import job_create, job_handler, run_job
from portal.log_redaction import RedactTokens
from portal.logcontext import LogContext, PlainFormatter, log_context

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


class _Capture(logging.Handler):
    """A handler as settings.LOGGING builds the console one: redaction, then the log context."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RedactTokens())
        self.addFilter(LogContext())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured():
    handler = _Capture()
    loggers = [logging.getLogger(name) for name in ("django.request", "tests.observability", "portal.jobs")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def _json_line(record: logging.LogRecord) -> dict:
    options = {k: v for k, v in settings.LOGGING["formatters"]["json"].items() if k != "()"}
    return json.loads(JsonFormatter(**options).format(record))


# --- request ids -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_every_response_carries_a_new_request_id_and_a_client_cannot_choose_it():
    client = Client()
    first, second = client.get("/healthz"), client.get("/healthz", HTTP_X_REQUEST_ID="chosen-by-client")

    assert HEX_ID.match(first["X-Request-ID"]) and HEX_ID.match(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_its_request_id_is_kept_if_it_looks_like_one():
    client = Client()
    assert client.get("/healthz", HTTP_X_REQUEST_ID="nginx-4f1c.77")["X-Request-ID"] == "nginx-4f1c.77"
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")["X-Request-ID"]
    assert HEX_ID.match(replaced)


# --- log lines ---------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_request_log_line_names_its_request_user_and_vm_as_json(alice, captured):
    client = Client()
    client.force_login(alice)

    response = client.get("/vms/987654/")

    assert response.status_code == 404
    record = next(r for r in captured.records if r.name == "django.request")
    line = _json_line(record)
    assert line["request_id"] == response["X-Request-ID"]
    assert (line["user"], line["vm_id"], line["level"], line["logger"]) == ("alice", "987654", "WARNING",
                                                                            "django.request")
    assert line["message"] == "Not Found: /vms/987654/" and line["instance"] == settings.INSTANCE_ID


def test_plain_lines_carry_the_context_and_tokens_stay_redacted(captured):
    logger = logging.getLogger("tests.observability")
    with log_context(user="bob", vm_id=12, job_id="j-1"):
        logger.warning("opened /consoles/share/SECRETTOKEN123/ and ?ticket=abc")
    logger.warning("no context here")

    formatter = PlainFormatter("%(levelname)s %(name)s%(context)s: %(message)s")
    with_context, without = (formatter.format(r) for r in captured.records)
    assert with_context == ("WARNING tests.observability [user=bob vm=12 job=j-1]: "
                            "opened /consoles/share/…/ and ?ticket=…")
    assert without == "WARNING tests.observability: no context here"
    assert "SECRETTOKEN123" not in json.dumps(_json_line(captured.records[0]), ensure_ascii=False)


@job_handler("test.observability.log")
def _logging_job(ctx):
    logging.getLogger("tests.observability").warning("working on %s", ctx.job.kind)
    return {}


@pytest.mark.django_db
def test_a_job_log_line_names_the_job_and_its_actor(alice, captured):
    job = job_create(kind="test.observability.log", actor=alice, via="api", target=alice)

    assert run_job(job.pk) == "succeeded"

    record = next(r for r in captured.records if r.getMessage() == "working on test.observability.log")
    assert (record.job_id, record.user, record.vm_id) == (str(job.pk), "alice", None)


# --- probes ------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "alive"}


@pytest.mark.django_db
def test_readyz_is_ready_with_the_database_the_channel_layer_and_an_up_host(test_host):

    Host.objects.filter(pk=test_host.pk).update(status=HostStatus.UP, last_seen_at=timezone.now())

    response = Client().get("/readyz")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready" and body["not_ready"] == []
    assert {name: check["ready"] for name, check in body["checks"].items()} == {
        "database": True, "channel_layer": True, "hosts": True}
    assert body["checks"]["hosts"]["summary"] == "1 of 1 enabled hosts up"


@pytest.mark.django_db
def test_readyz_does_not_count_an_up_host_no_monitor_has_seen_lately(test_host, admin_user):
    """With every monitor stopped, the recorded "up" ages: readiness says so instead of reporting it up
    (trial finding 3)."""


    Host.objects.filter(pk=test_host.pk).update(status=HostStatus.UP,
                                                last_seen_at=timezone.now() - timedelta(minutes=10))
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["hosts"]["summary"] == (
        "0 of 1 enabled hosts up; 1 not seen by a monitor for over 60 s")
    staff_client = Client()
    staff_client.force_login(admin_user)
    assert "is a monitor running?" in staff_client.get("/readyz").json()["checks"]["hosts"]["detail"]["testhost"]["status"]
    Host.objects.filter(pk=test_host.pk).update(last_seen_at=timezone.now())
    assert Client().get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_names_down_hosts_and_shows_their_names_to_staff_only(test_host, admin_user):
    Host.objects.filter(pk=test_host.pk).update(status=HostStatus.DOWN, last_error="connection refused")

    anonymous = Client().get("/readyz")
    staff_client = Client()
    staff_client.force_login(admin_user)
    staff = staff_client.get("/readyz")

    assert anonymous.status_code == 503 and anonymous.json()["not_ready"] == ["hosts"]
    assert anonymous.json()["checks"]["hosts"] == {"ready": False, "summary": "0 of 1 enabled hosts up"}
    assert "testhost" not in anonymous.content.decode() and "refused" not in anonymous.content.decode()
    assert staff.status_code == 503
    assert staff.json()["checks"]["hosts"]["detail"]["testhost"]["status"] == "down"
    assert staff.json()["checks"]["hosts"]["detail"]["testhost"]["last_error"] == "connection refused"

    with override_settings(READY_HOSTS="none"):
        assert Client().get("/readyz").status_code == 200
    # A host an administrator put in maintenance is not expected up under "all".
    Host.objects.filter(pk=test_host.pk).update(status=HostStatus.MAINTENANCE)
    with override_settings(READY_HOSTS="all"):
        assert Client().get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_says_when_the_channel_layer_is_unreachable():
    closed = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                          "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0"}]}}}
    channel_layers.backends.clear()
    try:
        with override_settings(CHANNEL_LAYERS=closed):
            channel_layers.backends.clear()
            response = Client().get("/readyz")
    finally:
        channel_layers.backends.clear()

    assert response.status_code == 503
    assert response.json()["not_ready"] == ["channel_layer"]
    assert response.json()["checks"]["channel_layer"] == {"ready": False, "summary": "unreachable"}


@pytest.mark.django_db
def test_readyz_says_when_the_database_is_unreachable(monkeypatch):
    class _NoDatabase:
        def cursor(self):
            raise OperationalError("could not connect to server db.internal:5432")

    monkeypatch.setattr("portal.health.connection", _NoDatabase())

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert "database" in response.json()["not_ready"]
    assert response.json()["checks"]["database"] == {"ready": False, "summary": "unreachable"}
    assert "db.internal" not in response.content.decode()

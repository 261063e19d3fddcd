"""One-time tokens (console tickets, share and console links, Slack links) never reach the access log."""

from __future__ import annotations

import datetime
import inspect
import logging

import pytest

from portal.log_redaction import LoggedAccessLog, RedactTokens, redact

SECRET = "s3cr3t-T0ken_value"


class Collect(logging.Handler):
    """Keeps the formatted lines a logger's handlers would write."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def collect():
    """collect(logger_name) -> a handler attached to that logger for the test."""
    attached: list[tuple[logging.Logger, Collect, int]] = []

    def attach(name: str) -> Collect:
        handler = Collect()
        logger = logging.getLogger(name)
        attached.append((logger, handler, logger.level))
        logger.setLevel(logging.INFO)  # whatever PORTAL_LOG_LEVEL the run has (make test uses WARNING)
        logger.addHandler(handler)
        return handler

    yield attach
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize(("line", "expected"), [
    (f"GET /consoles/share/{SECRET}/ HTTP/1.1", "GET /consoles/share/…/ HTTP/1.1"),
    (f"POST /consoles/share/{SECRET}/ticket/", "POST /consoles/share/…/ticket/"),
    (f"GET /consoles/link/{SECRET}/", "GET /consoles/link/…/"),
    (f"GET /slack/console/{SECRET}/", "GET /slack/console/…/"),
    (f"GET /slack/link/{SECRET}/?next=/", "GET /slack/link/…/?next=/"),
    (f"WSCONNECT /ws/consoles/vm/7/screen/?ticket={SECRET}", "WSCONNECT /ws/consoles/vm/7/screen/?ticket=…"),
    (f"Path: '/vm/7/screen/?x=1&ticket={SECRET}'", "Path: '/vm/7/screen/?x=1&ticket=…'"),
    ("GET /consoles/shares/12/revoke/ HTTP/1.1", "GET /consoles/shares/12/revoke/ HTTP/1.1"),  # an id, kept
    ("GET /consoles/vm/7/screen/", "GET /consoles/vm/7/screen/"),
])
def test_redact_replaces_tokens_in_paths_and_query_strings(line, expected):
    assert redact(line) == expected


def test_django_request_log_is_redacted_through_the_configured_logger(caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("django.request").warning("Not Found: %s", f"/slack/console/{SECRET}/")
    assert caplog.records, "the record reached the root logger"
    message = caplog.records[-1].getMessage()
    assert SECRET not in message and message == "Not Found: /slack/console/…/"


def test_django_server_log_is_redacted_through_the_configured_logger(collect):
    lines = collect("django.server").lines
    logging.getLogger("django.server").info('"%s" %s %s', f"GET /consoles/share/{SECRET}/ HTTP/1.1", 200, 512)
    assert lines == ['"GET /consoles/share/…/ HTTP/1.1" 200 512']


def test_daphne_access_log_goes_through_the_configured_logger_redacted(collect):
    lines = collect("daphne.access").lines
    log = LoggedAccessLog()
    log("http", "complete", {"path": f"/consoles/share/{SECRET}/ticket/", "status": 200, "method": "POST",
                             "client": "127.0.0.1:5000", "size": 99})
    log("websocket", "connected", {"path": f"/ws/consoles/vm/3/serial/?ticket={SECRET}", "client": "127.0.0.1:5001"})
    assert len(lines) == 2
    assert all(SECRET not in line for line in lines)
    assert '"POST /consoles/share/…/ticket/" 200 99' in lines[0]
    assert '"WSCONNECT /ws/consoles/vm/3/serial/?ticket=…" - -' in lines[1]


def test_daphnes_runserver_log_is_redacted(collect):
    lines = collect("django.channels.server").lines
    logging.getLogger("django.channels.server").info("WebSocket CONNECT %(path)s [%(client)s]",
                                                      {"path": f"/ws/consoles/vm/1/screen/?ticket={SECRET}",
                                                       "client": "127.0.0.1:1"})
    assert lines == ["WebSocket CONNECT /ws/consoles/vm/1/screen/?ticket=… [127.0.0.1:1]"]


def test_every_propagated_record_passes_the_console_handlers_filter():
    """websockify's and portal.web's lines reach the console handler, which redacts them too."""
    handlers = [h for h in logging.getLogger().handlers if any(isinstance(f, RedactTokens) for f in h.filters)]
    assert handlers, "settings.LOGGING puts the redaction filter on the console handler"
    record = logging.LogRecord("websocket.type", logging.INFO, __file__, 1, "%s: Path: '%s'",
                               ("127.0.0.1", f"/vm/1/screen/?ticket={SECRET}"), None)
    assert handlers[0].filter(record)
    assert record.getMessage() == "127.0.0.1: Path: '/vm/1/screen/?ticket=…'"


def test_runportal_serves_through_the_redacting_servers(monkeypatch, tmp_path):
    """The single-process demo serves through portal.serve (daphne, logged); the supervised portal through
    gunicorn with the portal's uvicorn workers (portal.gunicorn_conf), whose loggers are redacted."""
    from daphne import cli

    import portal.serve
    from portal.management.commands import runportal

    seen = {}
    monkeypatch.setattr(cli, "AccessLogGenerator", cli.AccessLogGenerator)  # restored after the test
    monkeypatch.setattr(cli.CommandLineInterface, "run", lambda self, argv: seen.setdefault("argv", argv))
    portal.serve.main(["-p", "1", "portal.asgi:application"])
    assert cli.AccessLogGenerator is LoggedAccessLog and seen["argv"] == ["-p", "1", "portal.asgi:application"]
    assert "from portal.serve import main" in inspect.getsource(runportal.Command._single_process)
    conf = runportal.supervisor_config(run_dir=tmp_path, base_dir=tmp_path, python="/py", bind="127.0.0.1",
                                       port=8000, workers=1, web_workers=2, secret="x")
    # (each command after util-linux's setpriv, which sets the parent-death signal and execs it)
    assert "/setpriv --pdeathsig TERM -- /py -m gunicorn -c python:portal.gunicorn_conf -b 127.0.0.1:8000 -w 2 " \
           "portal.asgi:application\n" in conf and "daphne" not in conf


@pytest.mark.parametrize("name", ["uvicorn.access", "uvicorn.error"])
def test_uvicorns_loggers_are_redacted_and_reach_the_root_handler(collect, name):
    """uvicorn's gunicorn worker gives these loggers gunicorn's (unfiltered) handlers before Django starts;
    settings.LOGGING takes them back: redacted, propagated to the root's console handler."""
    logger = logging.getLogger(name)
    assert logger.propagate and logger.level == logging.NOTSET
    lines = collect(name).lines
    logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/ws/consoles/vm/1/serial/?ticket={SECRET}")
    assert lines == ['127.0.0.1:5 - "WebSocket /ws/consoles/vm/1/serial/?ticket=…" [accepted]']


def test_a_logged_entry_keeps_the_ncsa_shape(collect):
    lines = collect("daphne.access").lines
    LoggedAccessLog().write_entry("1.2.3.4:5", datetime.datetime(2026, 1, 2, 3, 4, 5), "GET /", 200, 10)
    assert lines == ['1.2.3.4:5 - - [02/Jan/2026:03:04:05] "GET /" 200 10']

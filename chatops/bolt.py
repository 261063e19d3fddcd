"""Bolt wiring: the slack_bolt App (HTTP mode through slack_bolt.adapter.django, or Socket Mode).

The App exists only when PORTAL_SLACK_BOT_TOKEN is set, and then PORTAL_SLACK_SIGNING_SECRET is
required (the system check chatops.E001 stops start-up without it). Every request is verified
(v0 HMAC-SHA256 signature, timestamp at most 5 minutes old) by Bolt before a listener runs.

`process_before_response=True`: listeners run inside the HTTP request and their ack is the
response. They only do record-phase work (database rows, a job enqueued on commit), which fits
in Slack's 3 seconds; the hypervisor work runs in the job worker and reports back when it ends.
Nothing they say to Slack besides the ack waits in the request: posts are held in chatops.outbox
and sent once the response is out (over HTTP, by the view; in Socket Mode, right after the ack).
"""

from __future__ import annotations

import functools
import logging
import re
import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from slack_bolt import App
from slack_bolt.adapter.django import SlackRequestHandler
from slack_bolt.authorization import AuthorizeResult

from . import formatting as f
from . import handlers, outbox, slack

log = logging.getLogger(__name__)

ACTION_PATTERN = re.compile(r"^(vm|quota)_[a-z_]+$")

_app: App | None = None
_handler: SlackRequestHandler | None = None
_lock = threading.Lock()
# The bot's identity (auth.test): asked once in the background when the App is built, so no request
# waits for it; a request that comes before the answer asks with the short timeout.
_identity: AuthorizeResult | None = None
_identity_ready = threading.Event()
_identity_lock = threading.Lock()
_identity_fetching = False  # one auth.test at a time
_generation = 0  # bumped by reset_app: answers for an older App are dropped


def misconfiguration() -> str | None:
    """Why the Slack settings cannot work, or None."""
    if settings.SLACK_BOT_TOKEN and not settings.SLACK_SIGNING_SECRET:
        return ("PORTAL_SLACK_BOT_TOKEN is set but PORTAL_SLACK_SIGNING_SECRET is not: requests from Slack "
                "could not be verified.")
    return None


def build_app() -> App:
    """A new Bolt App for the configured workspace (raises ImproperlyConfigured when it can't be)."""
    problem = misconfiguration()
    if problem:
        raise ImproperlyConfigured(problem)
    if not settings.SLACK_BOT_TOKEN:
        raise ImproperlyConfigured("Slack is not configured (PORTAL_SLACK_BOT_TOKEN is empty).")
    app = App(
        name="vmportal",
        signing_secret=settings.SLACK_SIGNING_SECRET,
        # The bot's identity comes from auth.test, asked in the background now (see authorize).
        authorize=authorize,
        client=slack.get_client(),
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )
    app.command(settings.SLACK_COMMAND)(on_command)
    app.action(ACTION_PATTERN)(on_action)
    _identity_warm()
    return app


def _identity_fetch(generation: int) -> None:
    """auth.test for the configured bot token, in the background; remembered once it answers.

    `generation` is the App's: an answer for an App that was reset meanwhile (settings changed,
    tests) is dropped, and a fetch for the new App is started by the next request.
    """
    global _identity, _identity_fetching
    try:
        client = slack.get_client()
        if client is None:
            return
        response = client.auth_test()
        with _identity_lock:
            if generation == _generation:
                _identity = AuthorizeResult.from_auth_test_response(
                    auth_test_response=response, bot_token=settings.SLACK_BOT_TOKEN, user_token=None)
                _identity_ready.set()
    except Exception as exc:  # Slack unreachable or refusing: the next request asks again
        log.warning("Slack auth.test failed: %s", exc)
    finally:
        with _identity_lock:
            if generation == _generation:
                _identity_fetching = False


def _identity_warm() -> None:
    """Start the background auth.test unless it is known or already under way."""
    global _identity_fetching
    with _identity_lock:
        if _identity is not None or _identity_fetching:
            return
        _identity_fetching = True
        generation = _generation
    threading.Thread(target=_identity_fetch, args=(generation,), name="slack-auth-test", daemon=True).start()


def authorize(**kwargs: object) -> AuthorizeResult:
    """Bolt's authorization: the bot's identity from auth.test, asked in the background.

    A request waits for it at most QUICK_TIMEOUT seconds (so the acknowledgement stays within
    Slack's 3 s however slow Slack is); until it is known, requests go on with the bot token alone:
    the workspace check then passes only for PORTAL_SLACK_TEAM_IDS, and otherwise says the portal
    is still connecting.
    """
    if _identity is None:
        _identity_warm()
        _identity_ready.wait(slack.QUICK_TIMEOUT)
    return _identity or AuthorizeResult(enterprise_id=None, team_id=None, bot_token=settings.SLACK_BOT_TOKEN)


def get_app() -> App | None:
    """The process-wide App, or None when Slack is not configured."""
    global _app
    if not settings.SLACK_BOT_TOKEN:
        return None
    with _lock:
        if _app is None:
            _app = build_app()
        return _app


def get_handler() -> SlackRequestHandler | None:
    global _handler
    app = get_app()
    if app is None:
        return None
    with _lock:
        if _handler is None or _handler.app is not app:
            _handler = SlackRequestHandler(app)
        return _handler


def reset_app() -> None:
    global _app, _handler, _identity, _identity_fetching, _generation
    with _lock, _identity_lock:
        _app = _handler = _identity = None
        _identity_fetching = False
        _generation += 1
        _identity_ready.clear()


def _bot_team_id(context) -> str | None:
    result = context.authorize_result
    return result.team_id if result is not None else None


def on_command(ack, body, context, request) -> None:
    """The slash command: the reply is the acknowledgement (ephemeral unless it says otherwise)."""
    with outbox.holding() as held:
        try:
            reply = handlers.handle_command(body, bot_team_id=_bot_team_id(context), raw_body=request.raw_body)
        except Exception:  # a bug: the user gets a sentence, the log gets the traceback
            log.exception("Slack command failed")
            reply = f.internal_error_reply()
        if reply.text or reply.blocks:
            ack(**reply.as_body())
        else:
            ack()
    outbox.release(held)  # Socket Mode; over HTTP the view sends them after the response


def on_action(ack, body, action, context, request) -> None:
    """A button: acknowledged at once (empty 200); the answer goes to the response_url."""
    ack()
    retry = (request.headers.get("x-slack-retry-num") or [None])[0]
    with outbox.holding() as held:
        try:
            handlers.handle_action(body, action, bot_team_id=_bot_team_id(context), retry=bool(retry))
        except Exception:
            log.exception("Slack button failed")
            outbox.defer(functools.partial(slack.respond, str(body.get("response_url") or ""),
                                           text=f.internal_error_reply().text))
    outbox.release(held)

"""The Slack Web API client and best-effort posting.

Posting to Slack is never part of a portal action's outcome: a Slack outage, a channel the bot is
not in or an expired response_url is logged and reported as `None`/`False` to the caller.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

log = logging.getLogger(__name__)

# Seconds per Web API call. Posts never precede an acknowledgement (chatops.outbox sends them after
# the response), so they may wait for a slow Slack; the calls made while someone waits (the link
# page's users.info, auth.test when it was not warmed yet) use the short QUICK_TIMEOUT.
API_TIMEOUT = 10
QUICK_TIMEOUT = 2
SLACK_HOOKS = "https://hooks.slack.com/"

_client: WebClient | None = None
_quick: WebClient | None = None
_lock = threading.Lock()


def is_configured() -> bool:
    """Slack is on when a bot token is set (the system check insists on the signing secret too)."""
    return bool(settings.SLACK_BOT_TOKEN)


def api_base_url() -> str:
    base = settings.SLACK_API_BASE_URL or WebClient.BASE_URL
    return base if base.endswith("/") else base + "/"


def get_client() -> WebClient | None:
    """The process-wide Web API client (base_url from PORTAL_SLACK_API_BASE_URL), or None."""
    global _client
    if not is_configured():
        return None
    with _lock:
        if _client is None:
            _client = WebClient(token=settings.SLACK_BOT_TOKEN, base_url=api_base_url(), timeout=API_TIMEOUT)
        return _client


def quick_client() -> WebClient | None:
    """A client for calls someone is waiting on (a page, an acknowledgement): QUICK_TIMEOUT seconds."""
    global _quick
    if not is_configured():
        return None
    with _lock:
        if _quick is None:
            _quick = WebClient(token=settings.SLACK_BOT_TOKEN, base_url=api_base_url(), timeout=QUICK_TIMEOUT)
        return _quick


def reset() -> None:
    """Forget the clients and the Bolt app (settings changed, tests)."""
    global _client, _quick
    with _lock:
        _client = _quick = None
    from . import bolt  # bolt imports this module (the client): a circular pair, resolved at call time

    bolt.reset_app()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("SLACK_"):
        reset()


@dataclass(frozen=True)
class Posted:
    channel: str  # the channel id Slack answered (even when posted by name)
    ts: str


def post_message(*, channel: str, text: str, blocks: list | None = None, thread_ts: str = "") -> Posted | None:
    """chat.postMessage; returns where the message landed, or None when Slack refused or is unreachable."""
    client = get_client()
    if client is None or not channel:
        return None
    kwargs: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
    if blocks:
        kwargs["blocks"] = blocks
    if thread_ts:
        kwargs["thread_ts"] = thread_ts
    try:
        response = client.chat_postMessage(**kwargs)
    except SlackApiError as exc:
        log.warning("chat.postMessage to %s refused: %s", channel, exc.response.get("error"))
        return None
    except Exception as exc:  # network: Slack being down must not break the portal
        log.warning("chat.postMessage to %s failed: %s", channel, exc)
        return None
    return Posted(channel=response.get("channel") or channel, ts=response.get("ts") or "")


def update_message(*, channel: str, ts: str, text: str, blocks: list | None = None) -> bool:
    """chat.update of a message the bot posted."""
    client = get_client()
    if client is None or not channel or not ts:
        return False
    try:
        client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks or [])
    except SlackApiError as exc:
        log.warning("chat.update in %s refused: %s", channel, exc.response.get("error"))
        return False
    except Exception as exc:
        log.warning("chat.update in %s failed: %s", channel, exc)
        return False
    return True


@dataclass(frozen=True)
class SlackUser:
    """A Slack user as the Web API (users.info) describes them."""

    id: str
    team_id: str
    name: str  # the handle
    real_name: str
    display_name: str

    @property
    def label(self) -> str:
        """The name to show: the real name, else the display name, else the handle, else the id."""
        return self.real_name or self.display_name or self.name or self.id


def user_info(*, slack_user_id: str) -> SlackUser | None:
    """users.info for one user (needs the users:read scope), or None when Slack refused or is unreachable."""
    client = quick_client()  # the link page waits for it
    if client is None or not slack_user_id:
        return None
    try:
        response = client.users_info(user=slack_user_id)
    except SlackApiError as exc:
        log.warning("users.info for %s refused: %s", slack_user_id, exc.response.get("error"))
        return None
    except Exception as exc:
        log.warning("users.info for %s failed: %s", slack_user_id, exc)
        return None
    user = response.get("user") or {}
    profile = user.get("profile") or {}
    return SlackUser(
        id=str(user.get("id") or slack_user_id), team_id=str(user.get("team_id") or ""),
        name=str(user.get("name") or "")[:100],
        real_name=str(profile.get("real_name") or user.get("real_name") or "")[:100],
        display_name=str(profile.get("display_name") or "")[:100])


def response_url_allowed(url: str) -> bool:
    """Only Slack's own hooks (or the configured API host, for a self-hosted fake) get our replies."""
    if not url:
        return False
    if url.startswith(SLACK_HOOKS):
        return True
    base = urlsplit(settings.SLACK_API_BASE_URL or "")
    target = urlsplit(url)
    return bool(base.netloc) and (target.scheme, target.netloc) == (base.scheme, base.netloc)


def respond(response_url: str, *, text: str, blocks: list | None = None, response_type: str = "ephemeral",
            replace_original: bool = False, delete_original: bool = False) -> bool:
    """Post to an interaction's response_url (valid 30 minutes, 5 times)."""
    if not response_url_allowed(response_url):
        if response_url:
            log.warning("refusing to post to a response_url outside Slack: %.80s", response_url)
        return False
    body: dict[str, Any] = {"text": text, "response_type": response_type}
    if blocks is not None:
        body["blocks"] = blocks
    if replace_original:
        body["replace_original"] = True
    else:
        body["replace_original"] = False
    if delete_original:
        body = {"delete_original": True}
    try:
        response = WebhookClient(response_url, timeout=API_TIMEOUT).send_dict(body)
    except Exception as exc:
        log.warning("post to response_url failed: %s", exc)
        return False
    if response.status_code != 200:
        log.warning("response_url answered %s: %.200s", response.status_code, response.body)
        return False
    return True

"""Slack test kit: a local fake Slack (Web API + response_url) and requests signed exactly like Slack's.

- `fake_slack`: a threaded http.server on 127.0.0.1:<random port> that answers `auth.test`,
  `users.info`, `chat.postMessage`, `chat.update`, ... under /api/ and response_url posts under
  /response/, and records every call (with its arrival time) so tests can assert what the bot said
  and where. `delay` makes it answer slowly; `users` sets what users.info says about a user.
- `slack_on`: settings pointing the bot at the fake (token, signing secret, API base URL, admins'
  channel); the Bolt app is rebuilt for them.
- `slack`: builds, signs (v0 HMAC-SHA256 over `v0:{timestamp}:{body}`) and posts slash commands
  (application/x-www-form-urlencoded) and button clicks (`payload=` JSON) to the real /slack/events,
  then waits until the posts the bot makes after its acknowledgement (chatops.outbox) are done.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode

import pytest

TEAM = "T0PORTAL"
SECRET = "test-signing-secret-8f2b"
BOT_TOKEN = "xoxb-test-token"
ADMIN_CHANNEL = "CADMINS"
CHANNEL = "CGENERAL"


@dataclass
class Call:
    kind: str  # "api" or "response_url"
    method: str  # API method name, or the response path
    body: dict
    headers: dict = field(default_factory=dict)
    answer: dict = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() when it arrived

    @property
    def ts(self) -> str:
        """The ts Slack gave the posted message."""
        return self.answer.get("ts", "")

    @property
    def text(self) -> str:
        """All the words of the message: text plus every block's text (for assertions)."""
        parts = [str(self.body.get("text") or "")]
        parts += _block_texts(self.body.get("blocks"))
        return "\n".join(parts)

    @property
    def buttons(self) -> list[dict]:
        return [e for b in _as_list(self.body.get("blocks")) if b.get("type") == "actions" for e in b["elements"]]

    def button(self, text: str) -> dict:
        for b in self.buttons:
            if b["text"]["text"] == text:
                return b
        raise AssertionError(f"no button {text!r} in {[b['text']['text'] for b in self.buttons]}")


def _as_list(blocks) -> list:
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return blocks or []


def _block_texts(blocks) -> list[str]:
    out = []
    for b in _as_list(blocks):
        if "text" in b and isinstance(b["text"], dict):
            out.append(b["text"].get("text", ""))
        for e in b.get("elements", []):
            if isinstance(e.get("text"), dict):
                out.append(e["text"].get("text", ""))
            elif isinstance(e.get("text"), str):
                out.append(e["text"])
    return out


class FakeSlack:
    """Records calls; `not_in_channel` makes chat.postMessage to those channels fail like Slack does."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.not_in_channel: set[str] = set()
        self.delay = 0.0  # seconds before each answer (a slow Slack)
        self.users: dict[str, dict] = {}  # users.info: user id -> fields of the user object
        self._ts = itertools.count(100)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._responses = itertools.count(1)

    def response_url(self) -> str:
        return f"{self.url}/response/{next(self._responses)}"

    def _answer(self, method: str, body: dict) -> dict:
        if method == "auth.test":
            return {"ok": True, "team_id": TEAM, "team": "Portal Test", "user_id": "UBOT", "bot_id": "BBOT",
                    "url": "https://portal-test.slack.com/"}
        if method == "chat.postMessage":
            channel = body.get("channel", "")
            if channel in self.not_in_channel:
                return {"ok": False, "error": "not_in_channel"}
            ts = f"1700000000.{next(self._ts):06d}"
            # Direct messages to a user id land in the DM channel with the bot.
            landed = "D" + channel[1:] if channel.startswith("U") else channel
            return {"ok": True, "channel": landed, "ts": ts, "message": {"text": body.get("text"), "ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")}
        if method == "users.info":
            user_id = body.get("user", "")
            if user_id not in self.users:
                return {"ok": False, "error": "user_not_found"}
            fields = self.users[user_id]
            return {"ok": True, "user": {
                "id": user_id, "team_id": fields.get("team_id", TEAM), "name": fields.get("name", user_id.lower()),
                "real_name": fields.get("real_name", ""), "deleted": False, "is_bot": False,
                "profile": {"real_name": fields.get("real_name", ""),
                            "display_name": fields.get("display_name", "")}}}
        return {"ok": True}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path.startswith("/api/"):
                    method = self.path[len("/api/"):].split("?")[0]
                    with fake._lock:
                        result = fake._answer(method, body)
                        fake.calls.append(Call("api", method, body, headers, result, at=arrived))
                    time.sleep(fake.delay)
                    answer = json.dumps(result).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    with fake._lock:
                        fake.calls.append(Call("response_url", self.path, body, headers, at=arrived))
                    time.sleep(fake.delay)
                    answer = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler

    # --- assertions helpers ---

    def api(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.kind == "api" and c.method == method]

    def posts(self, channel: str | None = None) -> list[Call]:
        return [c for c in self.api("chat.postMessage") if channel is None or c.body.get("channel") == channel]

    def responses(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "response_url"]

    def said(self) -> list[Call]:
        """Everything the bot said (messages, updates, response_url posts), in order."""
        return [c for c in self.calls if c.kind == "response_url" or c.method in ("chat.postMessage", "chat.update")]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


@pytest.fixture
def fake_slack():
    from chatops import outbox

    fake = FakeSlack()
    fake.thread.start()
    yield fake
    outbox.wait()  # nothing may still be posting when the test's database goes away
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def slack_on(settings, fake_slack):
    """The bot configured against the fake Slack (the app and client are rebuilt on setting changes)."""
    settings.SLACK_BOT_TOKEN = BOT_TOKEN
    settings.SLACK_SIGNING_SECRET = SECRET
    settings.SLACK_API_BASE_URL = fake_slack.url + "/api/"
    settings.SLACK_ADMIN_CHANNEL = ADMIN_CHANNEL
    settings.SLACK_TEAM_IDS = []
    settings.PORTAL_BASE_URL = "http://portal.test"
    yield fake_slack


def sign(body: str, *, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """The headers Slack sends: X-Slack-Request-Timestamp and X-Slack-Signature (v0 HMAC-SHA256)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class SlackClient:
    """Sends what Slack would send to the portal's /slack/events."""

    def __init__(self, client, fake: FakeSlack) -> None:
        self.client = client
        self.fake = fake
        self._triggers = itertools.count(1)

    def post(self, body: str, *, headers: dict | None = None, signed: bool = True, timestamp: int | None = None,
             secret: str = SECRET, wait: bool = True):
        """POST like Slack; `wait`: also let the posts that follow the acknowledgement finish."""
        from chatops import outbox

        all_headers = dict(sign(body, timestamp=timestamp, secret=secret)) if signed else {}
        all_headers.update(headers or {})
        response = self.client.post("/slack/events", data=body, content_type="application/x-www-form-urlencoded",
                                    headers=all_headers)
        if wait:
            assert outbox.wait(timeout=30), "the posts after the acknowledgement did not finish"
        return response

    def command_body(self, text: str, *, user: str = "UALICE", team: str = TEAM, channel: str = CHANNEL,
                     trigger_id: str | None = None, command: str = "/vm", user_name: str = "") -> str:
        return urlencode({
            "token": "legacy-verification-token", "team_id": team, "team_domain": "portal-test",
            "channel_id": channel, "channel_name": "general", "user_id": user,
            "user_name": user_name or user.lower(), "command": command, "text": text,
            "api_app_id": "A0PORTAL", "is_enterprise_install": "false",
            "response_url": self.fake.response_url(),
            "trigger_id": trigger_id or f"{next(self._triggers)}.1700000000.abcdef",
        })

    def command(self, text: str, *, retry: int | None = None, wait: bool = True, **kwargs):
        body = self.command_body(text, **kwargs)
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
        return self.post(body, headers=headers, wait=wait)

    def click_body(self, action_id: str, value: str, *, user: str = "UALICE", team: str = TEAM,
                   channel: str = CHANNEL, message_ts: str = "1700000000.000001", thread_ts: str = "",
                   ephemeral: bool = False, text: str = "Button") -> str:
        container = {"type": "message", "message_ts": message_ts, "channel_id": channel,
                     "is_ephemeral": ephemeral}
        if thread_ts:
            container["thread_ts"] = thread_ts
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
            "api_app_id": "A0PORTAL",
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": f"{next(self._triggers)}.1700000000.fedcba",
            "team": {"id": team, "domain": "portal-test"},
            "channel": {"id": channel, "name": "general"},
            "response_url": self.fake.response_url(),
            "actions": [{"action_id": action_id, "block_id": "b1", "text": {"type": "plain_text", "text": text},
                         "value": value, "type": "button", "action_ts": f"{time.time():.6f}"}],
        }
        if not ephemeral:
            message = {"type": "message", "ts": message_ts, "text": "…", "bot_id": "BBOT"}
            if thread_ts:
                message["thread_ts"] = thread_ts
            payload["message"] = message
        return urlencode({"payload": json.dumps(payload)})

    def click(self, action_id: str, value: str, *, wait: bool = True, **kwargs):
        return self.post(self.click_body(action_id, value, **kwargs), wait=wait)

    def click_button(self, call: Call, text: str, **kwargs):
        """Click the button labelled `text` on a message the bot posted (`call`)."""
        b = call.button(text)
        if call.kind == "api":
            ts = kwargs.pop("message_ts", None) or call.ts
            kwargs.setdefault("thread_ts", call.body.get("thread_ts", ""))
            kwargs.setdefault("channel", call.body.get("channel"))
            return self.click(b["action_id"], b.get("value", ""), message_ts=ts, **kwargs)
        return self.click(b["action_id"], b.get("value", ""), ephemeral=True, **kwargs)


@pytest.fixture
def slack(client, slack_on):
    return SlackClient(client, slack_on)


def reply_of(response) -> dict:
    """The JSON a slash command answered with (its acknowledgement), or {} for an empty ack."""
    assert response.status_code == 200, (response.status_code, response.content[:300])
    return json.loads(response.content) if response.content else {}


def reply_text(response) -> str:
    body = reply_of(response)
    return "\n".join([str(body.get("text") or ""), *_block_texts(body.get("blocks"))])


@pytest.fixture
def link():
    """Link a Slack user id to a portal user (what `/vm link` + the portal page do)."""
    from chatops.models import SlackIdentity

    def make(user, slack_user_id: str, team: str = TEAM) -> SlackIdentity:
        return SlackIdentity.objects.create(team_id=team, slack_user_id=slack_user_id, user=user,
                                            slack_name=user.get_username())

    return make


@pytest.fixture
def small_flavor(db):
    from vms.models import Flavor

    return Flavor.objects.get_or_create(name="small", defaults={"vcpus": 1, "memory_mib": 128, "disk_gib": 1})[0]


@pytest.fixture(autouse=True)
def _fresh_test_driver():
    """libvirt's test:///default keeps its domains and volumes for the life of the connection, and
    its pool has a fixed size: start the next test from a fresh test driver state."""
    yield
    from portal.hypervisor import reset_drivers

    reset_drivers()

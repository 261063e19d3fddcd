"""Helpers for console tests: signed-in browser sessions, ticket rows, websocket communicators."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

ORIGIN = "http://testserver"


@pytest.fixture
def session_for(transactional_db):
    """session_for(user) -> the session key of a fresh signed-in browser session."""

    def make(user) -> str:
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return make


@pytest.fixture
def make_ticket(transactional_db):
    """make_ticket(user, vm, session_key, kind=..., **fields) -> plain token of a ticket row."""
    from consoles.models import ConsoleTicket

    def make(user, vm, session_key: str, *, kind: str = "screen", **fields) -> str:
        token = secrets.token_urlsafe(32)
        fields.setdefault("expires_at", timezone.now() + timedelta(seconds=30))
        ConsoleTicket.objects.create(token_hash=hashlib.sha256(token.encode()).hexdigest(), user=user, vm=vm,
                                     kind=kind, session_key=session_key, **fields)
        return token

    return make


def communicator(path: str, *, session_key: str | None = None, origin: str | None = ORIGIN,
                 host: str = "testserver", binary: bool = True) -> WebsocketCommunicator:
    """A websocket to the whole ASGI application (Origin validator, sessions, auth, routing)."""
    from portal.asgi import application

    headers = [(b"host", host.encode())]
    if origin:
        headers.append((b"origin", origin.encode()))
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(application, path, headers=headers,
                                 subprotocols=["binary"] if binary else None)


async def refused(comm: WebsocketCommunicator, timeout: float = 10) -> tuple[int, str]:
    """Connect, expect the accept-then-close of a refusal, and return (close code, reason)."""
    connected, _ = await comm.connect(timeout=timeout)
    assert connected, "a refusal is sent as a close code after the handshake, not as a rejected handshake"
    message = await comm.receive_output(timeout=timeout)
    while message["type"] == "websocket.send":  # status lines before the close
        message = await comm.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close", message
    await comm.disconnect(code=message["code"], timeout=timeout)
    return message["code"], message.get("reason") or ""


async def receive_close(comm: WebsocketCommunicator, timeout: float = 15) -> tuple[int, str, list]:
    """Read until the server closes; returns (code, reason, messages seen before)."""
    seen = []
    while True:
        message = await comm.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return message["code"], message.get("reason") or "", seen
        seen.append(message)


def ws_client(url: str, *, session_key: str | None, origin: str | None, binary: bool = True):
    """A real websocket client (websockets) for servers on a port: daphne or the console proxy."""
    from websockets.asyncio.client import connect

    headers = {"Cookie": f"sessionid={session_key}"} if session_key else {}
    return connect(url, origin=origin, additional_headers=headers, subprotocols=["binary"] if binary else None,
                   compression=None, proxy=None, open_timeout=10, max_size=None)


async def ws_close_code(ws, timeout: float = 15) -> tuple[int, str]:
    """Read until the server closes; (code, reason)."""
    from websockets.exceptions import ConnectionClosed

    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "the server closed without a close frame"
        return exc.rcvd.code, exc.rcvd.reason


@pytest.fixture
async def close_thread_connections():
    """Close the database connections that async tests open in asgiref's worker thread.

    (On PostgreSQL they would otherwise keep the test database busy at the end of the run.)
    """
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()

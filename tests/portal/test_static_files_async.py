"""Under ASGI the middleware chain stays on the event loop: every middleware is async-capable (WhiteNoise
through portal.static_files), so a request costs one thread hand-off (to the view), not one per sync
middleware boundary; static files are still served, in both modes."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import AsyncClient, Client
from django.utils.module_loading import import_string


def test_every_middleware_is_async_capable():
    sync_only = [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []


@pytest.mark.django_db
async def test_static_files_are_served_on_the_async_path_and_other_requests_go_through():
    client = AsyncClient()
    css = await client.get("/static/portal/portal.css")
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")
    assert css.getvalue()  # the file's bytes
    assert (await client.get("/static/portal/no-such-file.css")).status_code == 404
    assert (await client.get("/healthz")).status_code == 200


@pytest.mark.django_db
def test_static_files_are_served_on_the_sync_path():
    response = Client().get("/static/portal/portal.css")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")

"""Found trying the production setup as an operator (issue #13): every response carries its request id,
also those the outer middleware answers itself (HTTPS redirect, bad Host header)."""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings

HEX_ID = re.compile(r"^[0-9a-f]{32}$")

pytestmark = pytest.mark.django_db


@override_settings(SECURE_SSL_REDIRECT=True)
def test_the_https_redirect_carries_a_request_id():
    response = Client().get("/login/")
    assert response.status_code == 301 and response["Location"].startswith("https://")
    assert HEX_ID.match(response.get("X-Request-ID", ""))


def test_a_refused_host_header_is_answered_with_a_request_id():
    response = Client().get("/login/", HTTP_HOST="evil.example.org")
    assert response.status_code == 400
    assert HEX_ID.match(response.get("X-Request-ID", ""))


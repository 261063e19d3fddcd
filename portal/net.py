"""Who is asking: the client's address, by one rule for every door (API throttle, console audit).

With `PORTAL_TRUSTED_PROXIES=0` (the default) the client is the socket's peer and any
`X-Forwarded-For` header is ignored: a client cannot choose its own address. With N trusted reverse
proxies in front, each appends the address it saw, so the client is the Nth entry from the right;
everything left of it was written by the client and is never trusted. This is DRF's NUM_PROXIES rule
(REST_FRAMEWORK["NUM_PROXIES"] is set from the same setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings


def client_ip(*, remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int | None = None) -> str:
    """The client's address from the peer address and X-Forwarded-For, trusting only the configured proxies."""
    proxies = settings.TRUSTED_PROXIES if trusted_proxies is None else trusted_proxies
    remote = (remote_addr or "").strip()
    if proxies <= 0 or not forwarded_for or not forwarded_for.strip():
        return remote
    addresses = [address.strip() for address in forwarded_for.split(",")]
    return addresses[-min(proxies, len(addresses))] or remote


def request_client_ip(request: Any) -> str:
    """The client's address of a Django (or DRF) request."""
    meta = request.META
    return client_ip(remote_addr=meta.get("REMOTE_ADDR"), forwarded_for=meta.get("HTTP_X_FORWARDED_FOR"))


def client_label(*, peer: Sequence[Any] | None, forwarded_for: str | None) -> str:
    """`ip:port` of the peer, or the forwarded client's `ip` behind trusted proxies (for audit rows)."""
    host = str(peer[0]) if peer and peer[0] else ""
    port = peer[1] if peer and len(peer) > 1 else None
    address = client_ip(remote_addr=host, forwarded_for=forwarded_for)
    if address and address == host and port:
        return f"{address}:{port}"
    return address

"""Reads about networks: which a user may use, the default one, where they run."""

from __future__ import annotations

import ipaddress

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, Q, QuerySet

from cluster.models import Host
from portal.actors import Actor, is_admin, require_user
from portal.exceptions import NotFound, ValidationFailed

from .models import Network, NetworkHost, Reservation


def network_usable(*, user: Actor) -> QuerySet[Network]:
    """The networks a user may put VMs on: open ones and their groups'; administrators all."""
    user = require_user(user, "Sign in to see networks.")
    qs = Network.objects.all()
    if is_admin(user):
        return qs
    # An EXISTS over the groups' link table rather than a join and DISTINCT over whole rows (issue #13).
    shared = Network.groups.through.objects.filter(network_id=OuterRef("pk"), group__user=user.pk)
    return qs.filter(Q(is_public=True) | Exists(shared))


def network_default_for(*, user: User) -> Network | None:
    """The network preselected for a user's new VM: the default one if they may use it, else their
    only usable network, else none."""
    usable = network_usable(user=user)
    default = usable.filter(is_default=True).first()
    if default is not None:
        return default
    only = list(usable[:2])
    return only[0] if len(only) == 1 else None


def network_resolve(*, user: User, key: Network | str | int, field: str = "networks") -> Network:
    """A network given by object, id or name, checked against what the user may use.

    `field` names the input the error belongs to (`networks` when creating a VM, `network` when adding
    a NIC), so each door shows it next to the right field."""
    usable = network_usable(user=user)
    if isinstance(key, Network):
        if not usable.filter(pk=key.pk).exists():
            raise ValidationFailed(f"You may not use the network {key.name}.", field=field)
        return key
    text = str(key).strip()
    found = usable.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18) else usable.filter(name=text.lower()).first()
    if found is None:
        exists = Network.objects.filter(pk=int(text)).exists() if (text.isascii() and text.isdigit() and len(text) <= 18) else \
            Network.objects.filter(name=text.lower()).exists()
        if exists:
            raise ValidationFailed(f"You may not use the network {text[:40]}.", field=field)
        names = ", ".join(usable.values_list("name", flat=True)) or "none"
        raise ValidationFailed(f"Unknown network {text[:40]!r} (yours: {names}).", field=field)
    return found


def hosts_with_networks(networks: list[Network]) -> QuerySet[Host] | None:
    """Hosts where every one of `networks` runs (None: no restriction); a host that refused one is left out."""
    if not networks:
        return None
    qs = Host.objects.all()
    for network in networks:
        qs = qs.filter(pk__in=NetworkHost.objects.filter(network=network, active=True).values("host"))
    return qs


def network_placements(*, network: Network) -> QuerySet[NetworkHost]:
    return network.placements.select_related("host").order_by("host__name")


def network_get(*, user: Actor, key: Network | str | int) -> Network:
    """A network the user may use (administrators: any), by name or id; NotFound otherwise, so networks
    they may not use look missing (like other users' VMs)."""
    if isinstance(key, Network):
        key = key.pk
    text = str(key).strip().lower()
    usable = network_usable(user=user)
    found = usable.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18) else usable.filter(name=text).first()
    if found is None:
        raise NotFound(f"No network named {text[:40]!r}.")
    return found


def network_reservation_get(*, network: Network, key: object) -> Reservation:
    """One of the network's reservations, by its id, its MAC or its IP address."""
    text = str(key).strip().lower()
    if text.isdigit():
        by_id = network.reservations.filter(pk=int(text)).first()
        if by_id is not None:
            return by_id
    try:
        found = network.reservations.filter(ip=str(ipaddress.IPv4Address(text))).first()
    except ValueError:  # not an address (an inet column on PostgreSQL takes nothing else): a MAC
        found = network.reservations.filter(mac=text.replace("-", ":")).first()
    if found is None:
        raise NotFound(f"Network {network.name} has no reservation for {str(key)[:40]!r}.")
    return found

"""Pure checks for network input: names, address ranges, MACs, bridge names. No database, no libvirt."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass

from portal.exceptions import ValidationFailed

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# QEMU's own OUI: libvirt and most tools treat 52:54:00 as "a virtual NIC".
MAC_PREFIX = "52:54:00"
MIN_PREFIX, MAX_PREFIX = 8, 29


def validate_name(value: object) -> str:
    name = str(value or "").strip().lower()
    if not NAME_RE.match(name):
        raise ValidationFailed("Network name must be 2–40 lowercase letters, digits or hyphens "
                               "(not starting or ending with a hyphen).", field="name")
    return name


def validate_mac(value: object, *, field: str = "mac") -> str:
    """A unicast MAC in lowercase colon form (dashes and upper case are accepted)."""
    mac = str(value or "").strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise ValidationFailed(f"{str(value)[:40]!r} is not a MAC address (like 52:54:00:12:34:56).", field=field)
    if int(mac[:2], 16) & 1:
        raise ValidationFailed(f"{mac} is a multicast address; a NIC needs a unicast MAC.", field=field)
    if mac == "00:00:00:00:00:00":
        raise ValidationFailed("00:00:00:00:00:00 is not a usable MAC.", field=field)
    return mac


def random_mac() -> str:
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def validate_bridge(value: object) -> str:
    bridge = str(value or "").strip()
    if not BRIDGE_RE.match(bridge):
        raise ValidationFailed("Give the host bridge's interface name (1–15 letters, digits, '.', '_' or '-'), "
                               "e.g. br0.", field="bridge")
    return bridge


def validate_hostname(value: object, *, field: str = "hostname") -> str:
    name = str(value or "").strip().lower()
    if name and not HOSTNAME_RE.match(name):
        raise ValidationFailed("A host name is 1–63 lowercase letters, digits or hyphens.", field=field)
    return name


@dataclass(frozen=True)
class AddressPlan:
    """A checked IPv4 plan: subnet, the host's (gateway) address, the DHCP range."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dhcp_start: ipaddress.IPv4Address
    dhcp_end: ipaddress.IPv4Address

    @property
    def prefix(self) -> int:
        return self.subnet.prefixlen


def _address(value: object, field: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise ValidationFailed(f"{str(value)[:40]!r} is not an IPv4 address.", field=field) from None


def parse_subnet(value: object) -> ipaddress.IPv4Network:
    text = str(value or "").strip()
    try:
        subnet = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        hint = " (give the network address, e.g. 10.100.0.0/24)" if "host bits" in str(exc) else ""
        raise ValidationFailed(f"{text[:43]!r} is not an address range{hint}.", field="cidr") from None
    if not isinstance(subnet, ipaddress.IPv4Network):
        raise ValidationFailed("Only IPv4 address ranges are managed here.", field="cidr")
    if not MIN_PREFIX <= subnet.prefixlen <= MAX_PREFIX:
        raise ValidationFailed(f"The prefix must be between /{MIN_PREFIX} and /{MAX_PREFIX}.", field="cidr")
    if not (subnet.is_private and not subnet.is_loopback and not subnet.is_link_local):
        raise ValidationFailed("Use a private address range (10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16).",
                               field="cidr")
    return subnet


def plan_addresses(cidr: object, dhcp_start: object = None, dhcp_end: object = None,
                   gateway: object = None) -> AddressPlan:
    """Check a subnet, the host's address on it (default: the first one) and the DHCP range (default:
    the upper part of the subnet, kept clear of the host's address)."""
    subnet = parse_subnet(cidr)
    if gateway in (None, ""):
        host_ip = subnet.network_address + 1
    else:
        host_ip = _address(gateway, "gateway")
        if host_ip not in subnet or host_ip in (subnet.network_address, subnet.broadcast_address):
            raise ValidationFailed(f"The host's address {host_ip} is not a usable address of {subnet}.",
                                   field="gateway")
    last = subnet.broadcast_address - 1
    if dhcp_start in (None, "") and dhcp_end in (None, ""):
        offset = 10 if subnet.num_addresses >= 64 else 2
        start, end = subnet.network_address + offset, last
        if start <= host_ip <= end:  # a host address inside the default range: take the larger side
            if int(host_ip) - int(start) >= int(end) - int(host_ip):
                end = host_ip - 1
            else:
                start = host_ip + 1
    elif dhcp_start in (None, "") or dhcp_end in (None, ""):
        raise ValidationFailed("Give both ends of the DHCP range, or neither.",
                               field="dhcp_end" if dhcp_start not in (None, "") else "dhcp_start")
    else:
        start, end = _address(dhcp_start, "dhcp_start"), _address(dhcp_end, "dhcp_end")
    for field, addr in (("dhcp_start", start), ("dhcp_end", end)):
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise ValidationFailed(f"{addr} is not a usable address of {subnet}.", field=field)
        if addr == host_ip:
            raise ValidationFailed(f"{addr} is the host's own address on this network.", field=field)
    if start > end:
        raise ValidationFailed(f"The DHCP range starts after it ends ({start} > {end}).", field="dhcp_end")
    if start <= host_ip <= end:
        raise ValidationFailed(f"The host's address {host_ip} lies inside the DHCP range {start}–{end}: "
                               "guests could be given it.", field="gateway")
    return AddressPlan(subnet=subnet, gateway=host_ip, dhcp_start=start, dhcp_end=end)


MAX_DNS_SERVERS = 8


def validate_dns_servers(value: object) -> list[str]:
    """DNS servers guests resolve through (libvirt's dnsmasq forwards to them): a list, or a text of
    addresses separated by commas or spaces. IPv4 or IPv6, no duplicates, at most MAX_DNS_SERVERS."""
    if value in (None, ""):
        return []
    items = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    out: list[str] = []
    for item in items:
        text = str(item or "").strip()
        if not text:
            continue
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise ValidationFailed(f"{text[:40]!r} is not an IP address (DNS servers).", field="dns_servers") from None
        if addr.is_unspecified or addr.is_multicast:
            raise ValidationFailed(f"{addr} cannot be a DNS server.", field="dns_servers")
        if str(addr) not in out:
            out.append(str(addr))
    if len(out) > MAX_DNS_SERVERS:
        raise ValidationFailed(f"At most {MAX_DNS_SERVERS} DNS servers.", field="dns_servers")
    return out


def check_reservation_ip(plan: AddressPlan, value: object) -> str:
    ip = _address(value, "ip")
    if ip not in plan.subnet or ip in (plan.subnet.network_address, plan.subnet.broadcast_address):
        raise ValidationFailed(f"{ip} is not a usable address of {plan.subnet}.", field="ip")
    if ip == plan.gateway:
        raise ValidationFailed(f"{ip} is the host's own address on this network.", field="ip")
    return str(ip)

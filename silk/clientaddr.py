"""The client's address for abuse limits (sign-ups, failed keys), one definition for all."""

from __future__ import annotations

import ipaddress

from silk.appctx import this_request
from silk.ops.network import parse_ip

IPV6_CLIENT_PREFIX = 64  # an IPv6 client holds a whole /64 (any home line or host has one)


def client_address() -> str:
    """Who the abuse limits count the request against: its address, as `abuse_scope` reads it."""
    # silk.ops.network's middleware has already replaced REMOTE_ADDR from X-Forwarded-For
    # when, and only when, the peer is a trusted proxy (nginx), so nothing is parsed twice.
    return abuse_scope(this_request().remote_addr)


def abuse_scope(address: str | None) -> str:
    """An IPv4 address as itself, an IPv6 one as its /64 (its owner has 2^64 to pick from,
    each a first guess or sign-up if counted alone), an IPv4-mapped one as IPv4, and what
    is no IP (a unix socket's peer, nginx's "unix:") as its text."""
    if address and ":" not in address and "%" not in address:
        # IPv4 (or no IP): parsing it would give back the same text, for 8 µs a request.
        return address
    ip = parse_ip(address)
    if ip is None:
        return address or "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)

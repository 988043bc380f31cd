"""Client addresses behind nginx, and address lists (CIDRs) for operator-only endpoints."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable

# Loopback and the private ranges: where Prometheus and the operator's hosts live.
DEFAULT_METRICS_ALLOW = ("127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,"
                         "fc00::/7")
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str | Iterable[str] | None) -> tuple[Network, ...]:
    """Parse 'a/b, c' (or a list) into networks; '*' means everyone; bad entries raise."""
    if spec is None:
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    networks: list[Network] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        networks.append(ipaddress.ip_network(item, strict=False))
    return tuple(networks)


def parse_ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP `address` names, an IPv4-mapped IPv6 one as IPv4 and without a zone (%eth0);
    None for what is no IP (a unix socket's peer, nginx's "unix:")."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def address_in(address: str | None, networks: tuple[Network, ...]) -> bool:
    """True when `address` (an IP, perhaps IPv4-mapped IPv6) lies in one of `networks`."""
    ip = parse_ip(address)
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


def setting(config, name: str, default: str) -> str:
    """A string setting: the environment variable, else the app config, else `default`."""
    value = os.environ.get(name)
    if value is None:
        value = config.get(name)
    if value is None:
        return default
    return value if isinstance(value, str) else ",".join(value)


def unix_peer(environ) -> bool:
    """Whether the request came through a unix socket (gunicorn's `bind = unix:...`): its
    peer is on this host and has no address, REMOTE_ADDR empty (or the client's path)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        return getattr(sock, "family", None) == socket.AF_UNIX
    return not environ.get("REMOTE_ADDR")


class TrustedProxies:
    """WSGI middleware: behind a trusted proxy, REMOTE_ADDR becomes the real client address.

    Only a peer in the trusted list, or one on a unix socket (as local as loopback: nginx on
    this host), may speak for the client through X-Forwarded-For, and the client is the
    rightmost address that is not itself a trusted proxy; so a client that forges the header
    gains nothing, while a gateway reached directly sees its true peer.
    """

    def __init__(self, app, trusted: tuple[Network, ...]):
        self.app = app
        self.trusted = trusted

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR")
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded and (address_in(peer, self.trusted) or unix_peer(environ)):
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            client = peer
            for hop in reversed(hops):
                client = hop
                if not address_in(hop, self.trusted):
                    break
            environ["silk.proxy_peer"] = peer
            environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)


def install_trusted_proxies(app) -> None:
    """Wrap the app so request.remote_addr is the client's, given the trusted proxies.

    The list is SILK_TRUSTED_PROXIES, else gunicorn's FORWARDED_ALLOW_IPS, else loopback;
    '*' trusts every peer (only when the gateway is reachable from the proxy alone).
    """
    spec = os.environ.get("SILK_TRUSTED_PROXIES") or app.config.get("SILK_TRUSTED_PROXIES") \
        or os.environ.get("FORWARDED_ALLOW_IPS") or DEFAULT_TRUSTED_PROXIES
    if not isinstance(spec, str):
        spec = ",".join(spec)
    if not isinstance(app.wsgi_app, TrustedProxies):
        app.wsgi_app = TrustedProxies(app.wsgi_app, parse_networks(spec))

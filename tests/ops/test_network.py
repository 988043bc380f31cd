"""Client addresses behind proxies and CIDR allow lists."""

from __future__ import annotations

import pytest

from silk.ops.network import TrustedProxies, address_in, parse_networks


def test_parse_networks_reads_cidrs_hosts_and_star():
    nets = parse_networks(" 10.0.0.0/8, 192.168.1.5 ,::1/128,")
    assert address_in("10.20.30.40", nets) and address_in("192.168.1.5", nets)
    assert address_in("::1", nets) and not address_in("192.168.1.6", nets)
    everyone = parse_networks("*")
    assert address_in("203.0.113.1", everyone) and address_in("2001:db8::1", everyone)
    assert parse_networks("") == () and parse_networks(None) == ()


def test_a_bad_network_is_an_error():
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


def test_address_in_handles_mapped_and_junk_addresses():
    nets = parse_networks("127.0.0.0/8")
    assert address_in("::ffff:127.0.0.1", nets)
    assert not address_in("not-an-ip", nets) and not address_in(None, nets)


@pytest.mark.parametrize("peer, header, client", [
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),   # the client forged one hop
    ("127.0.0.1", "203.0.113.7, 127.0.0.1", "203.0.113.7"),      # two trusted proxies
    ("203.0.113.9", "10.0.0.1", "203.0.113.9"),                  # untrusted peer: ignored
    ("127.0.0.1", None, "127.0.0.1"),
])
def test_trusted_proxies_pick_the_rightmost_untrusted_hop(peer, header, client):
    seen = {}

    def app(environ, start_response):
        seen["addr"] = environ["REMOTE_ADDR"]
        return []

    environ = {"REMOTE_ADDR": peer}
    if header:
        environ["HTTP_X_FORWARDED_FOR"] = header
    TrustedProxies(app, parse_networks("127.0.0.1,::1"))(environ, None)
    assert seen["addr"] == client


@pytest.mark.parametrize("family, peer, client", [
    ("unix", "", "203.0.113.7"),                    # nginx through gunicorn's unix socket
    ("unix", "/run/nginx/client.sock", "203.0.113.7"),  # a peer bound to a path of its own
    ("inet", "203.0.113.9", "203.0.113.9"),         # a TCP peer outside the list: ignored
    (None, "", "203.0.113.7"),                      # another server's unix socket: no address
    (None, None, "203.0.113.7"),
])
def test_a_unix_socket_peer_is_trusted_like_loopback(family, peer, client):
    """A unix socket's peer is on this host: it speaks for the client as nginx on loopback."""
    import socket

    seen = {}

    def app(environ, start_response):
        seen["addr"] = environ.get("REMOTE_ADDR")
        return []

    environ = {"HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.7"}
    if peer is not None:
        environ["REMOTE_ADDR"] = peer
    families = {"unix": socket.AF_UNIX, "inet": socket.AF_INET}
    with socket.socket(families.get(family, socket.AF_INET), socket.SOCK_STREAM) as sock:
        if family:
            environ["gunicorn.socket"] = sock
        TrustedProxies(app, parse_networks("127.0.0.1,::1"))(environ, None)
    assert seen["addr"] == client


@pytest.mark.parametrize("address, scope", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("unix:", "unix:"),
    ("", "unknown"),
    (None, "unknown"),
])
def test_abuse_limits_count_an_ipv6_client_by_its_64(address, scope):
    from silk.clientaddr import abuse_scope

    assert abuse_scope(address) == scope


def test_an_ipv4_address_is_counted_as_the_parser_writes_it():
    """The quick path for text without a colon (IPv4, or no IP) gives what parsing gives."""
    import ipaddress
    import random

    from silk.clientaddr import abuse_scope

    rng = random.Random(7)
    for _ in range(2000):
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        assert abuse_scope(str(ip)) == str(ip)
    for text in ("010.1.1.1", "1.2.3", "localhost", "256.1.1.1"):  # no IP: its text
        assert abuse_scope(text) == text

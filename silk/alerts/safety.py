"""Where a webhook may point: http(s) to public addresses, unless the operator allows more."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlparse


class UnsafeUrl(ValueError):
    """A webhook URL the gateway will not post to; the message says why."""


# urlparse drops a tab, CR or LF before splitting, so the host it checks is not the URL
# that is stored and posted to (which urllib3 then cannot parse); no URL needs any of these.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: str, *, allow_private: bool) -> list[str]:
    """Raise UnsafeUrl unless `url` is http(s) and, unless `allow_private`, every address
    its host resolves to is public (no loopback, private, link-local or reserved range:
    the gateway would otherwise post into its own network for whoever sets the URL).

    Returns the addresses checked ([] when private ones are allowed): a delivery connects
    to one of them, not to what a second lookup of the host says, which a name server
    could answer differently (DNS rebinding).
    """
    if _CONTROL_OR_SPACE.search(url):
        raise UnsafeUrl("must not contain a space or control character")
    try:
        parsed = urlparse(url)
    except ValueError:  # an unclosed IPv6 bracket: http://[::1
        raise UnsafeUrl("must be an http or https URL with a host") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UnsafeUrl("must be an http or https URL with a host")
    if parsed.username or parsed.password:
        raise UnsafeUrl("must not carry a user or password")
    if allow_private:
        return []
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(parsed.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        raise UnsafeUrl("its host does not resolve") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if not address.is_global or not all(inner.is_global for inner in _embedded(address)):
            raise UnsafeUrl("points to a loopback, private or reserved address")
        if text not in addresses:
            addresses.append(text)
    return addresses


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses


def _embedded(address: ipaddress.IPv4Address | ipaddress.IPv6Address
              ) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, compatible, NAT64, 6to4,
    Teredo): a public-looking IPv6 address that a translator or tunnel turns into a
    loopback or private IPv4 one is as inward as that one."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64 or address in _COMPATIBLE:
        inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [found for found in inner if found is not None]

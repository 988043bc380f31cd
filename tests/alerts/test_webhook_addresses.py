"""Webhook URLs whose IPv6 address carries an inward IPv4 one: IPv4-compatible (::a.b.c.d),
NAT64's well-known prefix (64:ff9b::/96, which a NAT64 gateway, e.g. on an IPv6-only cloud
subnet, turns into that IPv4 address) and 6to4 (2002:AABB:CCDD::). Python's is_global
calls these public; the gateway must not."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("url", [
    "http://[::7f00:1]/hook",               # ::127.0.0.1
    "http://[64:ff9b::7f00:1]/hook",        # NAT64 -> 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/latest",   # NAT64 -> 169.254.169.254
    "http://[64:ff9b::a00:5]/hook",         # NAT64 -> 10.0.0.5
    "http://[2002:a00:5::1]/hook",          # 6to4 of 10.0.0.5
])
def test_ipv6_forms_of_inward_ipv4_addresses_are_refused(client, accounts, url):
    acct = accounts.make()
    answer = client.put("/v1/account/alerts", json={"webhook_url": url}, headers=acct.headers)
    assert answer.status_code == 400, (url, answer.json)
    assert answer.json["error"]["param"] == "webhook_url"


@pytest.mark.parametrize("url", [
    "http://2130706433/hook",               # 127.0.0.1 as one decimal number
    "http://0177.0.0.1/hook",               # octal
    "http://0x7f000001/hook",               # hexadecimal
    "http://127.1/hook",                    # the short form
    "http://0/hook",                        # 0.0.0.0, which reaches this host
    "http://[::ffff:127.0.0.1]/hook",       # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/latest",     # IPv4-mapped 169.254.169.254 (cloud metadata)
    "http://169.254.169.254:80/latest",
    "http://[fd00:ec2::254]/latest",        # AWS's IPv6 metadata address
])
def test_other_spellings_of_inward_ipv4_addresses_are_refused(client, accounts, url):
    """The C resolver reads these as the inward address they spell; so does the check."""
    acct = accounts.make()
    answer = client.put("/v1/account/alerts", json={"webhook_url": url}, headers=acct.headers)
    assert answer.status_code == 400, (url, answer.json)
    assert answer.json["error"]["param"] == "webhook_url"


@pytest.mark.parametrize("url", ["http://[::1", "https://[", "http://[::1/hook"])
def test_urls_python_cannot_split_are_400s(client, accounts, url):
    acct = accounts.make()
    answer = client.put("/v1/account/alerts", json={"webhook_url": url}, headers=acct.headers)
    assert answer.status_code == 400, (url, answer.json)
    assert answer.json["error"]["param"] == "webhook_url"


def test_public_addresses_in_those_forms_are_still_accepted():
    from silk.alerts.safety import check_url

    assert check_url("http://[64:ff9b::808:808]/", allow_private=False) == ["64:ff9b::808:808"]
    assert check_url("http://[2606:4700:4700::1111]/", allow_private=False)

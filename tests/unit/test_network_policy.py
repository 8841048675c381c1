"""Which addresses media downloads may reach."""

from __future__ import annotations

import ipaddress

import pytest

from worker.media.network import HostPolicy, embedded_ipv4, is_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # shared address space (a metadata endpoint too)
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_allowed_hosts_match_names_addresses_and_networks() -> None:
    policy = HostPolicy.from_hosts(["media.internal", "127.0.0.1", "10.0.0.0/8", "[::1]", "Cache.Local."])
    loopback = ipaddress.ip_address("127.0.0.1")
    private = ipaddress.ip_address("10.9.8.7")

    assert policy.allows("media.internal", private)
    assert policy.allows("MEDIA.internal.", private)
    assert policy.allows("cache.local", private)
    assert policy.allows("localhost", loopback)  # the address is listed
    assert policy.allows("anything", private)  # inside a listed network
    assert policy.allows("v6", ipaddress.ip_address("::1"))
    assert not policy.allows("other.internal", ipaddress.ip_address("192.168.0.1"))
    assert not policy.allows("metadata", ipaddress.ip_address("169.254.169.254"))
    assert policy.allows("example.com", ipaddress.ip_address("93.184.216.34"))


def test_no_allowed_hosts_allows_only_public_addresses() -> None:
    policy = HostPolicy.from_hosts([])
    assert not policy.allows("localhost", ipaddress.ip_address("127.0.0.1"))
    assert policy.allows("example.com", ipaddress.ip_address("93.184.216.34"))


# IPv6 forms that carry an IPv4 address: judged by the IPv4 address they reach.
EMBEDDED_INTERNAL = {
    "NAT64": "64:ff9b::127.0.0.1",
    "NAT64 to metadata": "64:ff9b::a9fe:a9fe",  # 169.254.169.254
    "local NAT64 (/96 layout)": "64:ff9b:1::a00:1",  # 10.0.0.1
    "local NAT64 (/48 layout)": "64:ff9b:1:7f00:1::",  # 127.0.0.1 split around the u octet
    "6to4": "2002:7f00:1::1",  # 127.0.0.1
    "6to4 to a private network": "2002:c0a8:101::",  # 192.168.1.1
    "Teredo, private client": "2001:0:808:808::f5ff:fffe",  # client 10.0.0.1, inverted
    "Teredo, private server": "2001:0:a00:1::f7f7:f7f7",  # server 10.0.0.1
    "IPv4-mapped": "::ffff:10.0.0.1",
    "IPv4-translated": "::ffff:0:7f00:1",
    "IPv4-compatible": "::127.0.0.1",
    "IPv4-compatible metadata": "::169.254.169.254",
}
EMBEDDED_PUBLIC = {
    "NAT64": "64:ff9b::8.8.8.8",
    "6to4": "2002:808:808::1",
    "Teredo": "2001:0:808:808::f7f7:f7f7",  # server and client 8.8.8.8
    "IPv4-mapped": "::ffff:8.8.8.8",
    "IPv4-compatible": "::8.8.8.8",
}


@pytest.mark.parametrize("form", EMBEDDED_INTERNAL)
def test_ipv6_forms_of_internal_ipv4_addresses_are_not_public(form: str) -> None:
    assert not is_public(ipaddress.ip_address(EMBEDDED_INTERNAL[form]))


@pytest.mark.parametrize("form", EMBEDDED_PUBLIC)
def test_ipv6_forms_of_public_ipv4_addresses_are(form: str) -> None:
    assert is_public(ipaddress.ip_address(EMBEDDED_PUBLIC[form]))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]),
        ("2002:7f00:1::1", ["127.0.0.1"]),
        ("2001:0:808:808::f5ff:fffe", ["8.8.8.8", "10.0.0.1"]),  # Teredo: server, then client
        ("::ffff:0:7f00:1", ["127.0.0.1"]),
        ("2606:4700::1111", []),
    ],
)
def test_the_embedded_address_is_extracted(address: str, expected: list[str]) -> None:
    assert [str(inner) for inner in embedded_ipv4(ipaddress.IPv6Address(address))] == expected


def test_allowed_networks_cover_the_ipv6_forms_of_their_addresses() -> None:
    policy = HostPolicy.from_hosts(["10.0.0.0/8"])
    assert policy.allows("x", ipaddress.ip_address("::ffff:10.1.2.3"))
    assert policy.allows("x", ipaddress.ip_address("64:ff9b::a01:203"))
    assert not policy.allows("x", ipaddress.ip_address("64:ff9b::7f00:1"))

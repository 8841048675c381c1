"""Which addresses media downloads may reach."""

from __future__ import annotations

import ipaddress

import pytest

from worker.media.network import HostPolicy, is_public


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

"""Where media downloads may connect: public addresses, plus the hosts an operator allows.

The check runs when a connection is opened, on the addresses the connection will use, so
a name that resolves to a public address when checked and to a private one when
connected (DNS rebinding) cannot slip through, and every redirect hop is checked too.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPv4 = ipaddress.IPv4Address


class BlockedAddress(Exception):
    def __init__(self, host: str, address: IPAddress) -> None:
        named = host if host == str(address) else f"{host} resolves to {address}, which"
        super().__init__(f"{named} is a loopback, private or link-local address")
        self.host = host
        self.address = address


# IPv6 ranges that carry an IPv4 address and reach it: a translator or tunnel forwards the
# connection to that IPv4 address, so it is what decides. Python calls some of them global
# whatever they embed (64:ff9b::127.0.0.1, 2002:7f00:1::, ::127.0.0.1).
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a local translator, any prefix length
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: IPv4 in bits 16-47
_TEREDO = ipaddress.IPv6Network("2001::/32")  # RFC 4380: server IPv4, and client IPv4 inverted
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated; also holds :: and ::1
# Where RFC 6052 puts the IPv4 address for each prefix length: (bit offset, bits) pieces;
# bits 64-71 (the "u" octet) are always skipped.
_RFC6052_LAYOUTS = {
    48: ((48, 16), (72, 16)),
    56: ((56, 8), (72, 24)),
    64: ((72, 32),),
    96: ((96, 32),),
}


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a connection to ``address`` may reach; empty for plain IPv6."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _TEREDO:
        assert address.teredo is not None
        return list(address.teredo)  # (server, client); ipaddress undoes the client's inversion
    if address in _SIX_TO_FOUR:
        assert address.sixtofour is not None
        return [address.sixtofour]
    if address in _NAT64_WELL_KNOWN or address in _IPV4_TRANSLATED or address in _IPV4_COMPATIBLE:
        return [_bits_to_ipv4(address, _RFC6052_LAYOUTS[96])]
    if address in _NAT64_LOCAL:
        # The translator's prefix length is not in the address: every layout must be safe.
        return [_bits_to_ipv4(address, layout) for layout in _RFC6052_LAYOUTS.values()]
    return []


def _bits_to_ipv4(address: ipaddress.IPv6Address, layout: tuple[tuple[int, int], ...]) -> IPv4:
    value = 0
    for offset, bits in layout:
        value = (value << bits) | ((int(address) >> (128 - offset - bits)) & ((1 << bits) - 1))
    return ipaddress.IPv4Address(value)


def is_public(address: IPAddress) -> bool:
    """Not loopback, private, link-local (cloud metadata), shared, reserved or multicast."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded:
            return all(is_public(inner) for inner in embedded)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class HostPolicy:
    """ALLOWED_MEDIA_HOSTS: host names, addresses or networks exempt from the public-only rule."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_hosts(cls, hosts: Iterable[str]) -> HostPolicy:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (host.strip().strip("[]").lower() for host in hosts):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        if is_public(address) or host.lower().rstrip(".") in self.names:
            return True
        if any(address in network for network in self.networks):
            return True
        # An IPv6 form of an allowed IPv4 address is allowed too, when every address it embeds is.
        embedded = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
        return bool(embedded) and all(
            is_public(inner) or any(inner in network for network in self.networks) for inner in embedded
        )


def resolve(host: str, port: int, timeout: float | None = None) -> list[IPAddress]:
    """The host's addresses; getaddrinfo runs in a thread of its own so that the download's
    deadline covers name resolution too (a resolver may take far longer than any timeout)."""
    answer: list[list[Any] | OSError] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        except OSError as error:
            answer.append(error)
        done.set()

    # A daemon thread: a lookup that never returns is left behind, holding nothing else.
    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(timeout):
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than the download's deadline")
    infos = answer[0]
    if isinstance(infos, OSError):
        raise httpcore.ConnectError(f"cannot resolve {host}: {infos}") from infos
    addresses: list[IPAddress] = []
    for info in infos:
        # Drop an IPv6 scope ("fe80::1%eth0"): ip_address() does not take it.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses the policy allows, and to the very address it checked."""

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        started = time.monotonic()
        addresses = resolve(host, port, timeout)
        if timeout is not None:  # the connection gets what the lookup left
            timeout = max(0.001, timeout - (time.monotonic() - started))
        for address in addresses:
            # Any disallowed address refuses the host: its DNS could pick that one next time.
            if not self._policy.allows(host, address):
                raise BlockedAddress(host, address)
        error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                # TLS still verifies and sends SNI for `host`: httpcore takes them from the URL.
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as failed:
                error = failed
        raise error or httpcore.ConnectError(f"no address for {host}")


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the guarded backend; no proxies, which would bypass the check."""

    def __init__(self, policy: HostPolicy, max_connections: int) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt with one (httpx is pinned).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(policy),
            max_connections=max_connections,
        )

"""Where media downloads may connect: public addresses, plus the hosts an operator allows.

The check runs when a connection is opened, on the addresses the connection will use, so
a name that resolves to a public address when checked and to a private one when
connected (DNS rebinding) cannot slip through, and every redirect hop is checked too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddress(Exception):
    def __init__(self, host: str, address: IPAddress) -> None:
        named = host if host == str(address) else f"{host} resolves to {address}, which"
        super().__init__(f"{named} is a loopback, private or link-local address")
        self.host = host
        self.address = address


def is_public(address: IPAddress) -> bool:
    """Not loopback, private, link-local (cloud metadata), shared, reserved or multicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
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
        return any(address in network for network in self.networks)


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
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
        addresses = resolve(host, port)
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

    def __init__(self, policy: HostPolicy) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt with one (httpx is pinned).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(policy),
        )

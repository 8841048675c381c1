"""Redis clients for the gateway and the workers, direct or through Redis Sentinel.

With ``REDIS_SENTINELS`` set, clients ask the sentinels for the current master of
``REDIS_MASTER_NAME`` and follow it through a failover (the connection pool asks again
after a connection error); the database, user and password still come from ``REDIS_URL``.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.connection import parse_url
from redis.sentinel import Sentinel

from shared.settings import Settings


def _sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    addresses = []
    for item in settings.redis_sentinels:
        host, _, port = item.rpartition(":")
        addresses.append((host or item, int(port) if host else 26379))
    return addresses


def _server_options(settings: Settings) -> dict[str, Any]:
    """What REDIS_URL says about the server besides where it is."""
    options: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    return {name: options[name] for name in ("db", "username", "password") if options.get(name) is not None}


def sync_client(settings: Settings, max_connections: int | None = None) -> redis.Redis:
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, max_connections=max_connections)
    sentinel = Sentinel(_sentinel_addresses(settings), socket_timeout=5)  # type: ignore[no-untyped-call]
    options = _server_options(settings)
    if max_connections is not None:
        options["max_connections"] = max_connections
    client = sentinel.master_for(settings.redis_master_name, redis_class=redis.Redis, **options)  # type: ignore[no-untyped-call]
    return cast(redis.Redis, client)


def async_client(settings: Settings, max_connections: int | None = None) -> redis.asyncio.Redis:
    """A client with decoded responses, as the gateway uses everywhere."""
    if not settings.redis_sentinels:
        return redis.asyncio.Redis.from_url(
            settings.redis_url, decode_responses=True, max_connections=max_connections
        )
    sentinel = AsyncSentinel(_sentinel_addresses(settings), socket_timeout=5)  # type: ignore[no-untyped-call]
    options = {**_server_options(settings), "decode_responses": True}
    if max_connections is not None:
        options["max_connections"] = max_connections
    client = sentinel.master_for(settings.redis_master_name, redis_class=redis.asyncio.Redis, **options)
    return cast(redis.asyncio.Redis, client)

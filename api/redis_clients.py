"""The gateway's Redis clients: one bounded pool for commands, and the stream hub's readers."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.hub_reader import BLOCK_MS
from shared.settings import Settings

# A connection that cannot be made within this is an outage (503), not a hang.
CONNECT_TIMEOUT_SECONDS = 5.0


def command_client(settings: Settings) -> Redis:
    """Requests share GATEWAY_REDIS_CONNECTIONS connections and wait for a free one.

    Nothing on this pool blocks in Redis (the relay's blocking reads have connections of
    their own), so a connection frees up within a round trip: waiting for one has no
    timeout, rather than failing requests when many arrive at once.
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.gateway_redis_connections,
        timeout=None,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
    )
    return Redis.from_pool(pool)


def reader_client(settings: Settings) -> Redis:
    """One connection for one hub reader's blocking XREADs.

    It does not retry by itself: the reader notices the failure, backs off, and resumes
    from where it was (on a new connection, whose id it must learn to be woken).
    """
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        single_connection_client=True,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=BLOCK_MS / 1000 + CONNECT_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )

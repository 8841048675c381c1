"""Retrying a Redis call through an outage, for up to REDIS_OUTAGE_TOLERANCE_SECONDS.

Only what a restart, a failover or a stall raises is retried; the calls retried this way
are idempotent (the session scripts recognise a replayed write), so trying again is safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

# What Redis raises while it restarts, loads its data, fails over or stalls.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
)
FIRST_DELAY_SECONDS = 0.05
LONGEST_DELAY_SECONDS = 2.0


def backoff_delays(tolerance_seconds: float) -> Callable[[], float | None]:
    """Delays that double up to a cap; None once the tolerance is spent."""
    deadline = time.monotonic() + tolerance_seconds
    delay = FIRST_DELAY_SECONDS

    def next_delay() -> float | None:
        nonlocal delay
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        current, delay = min(delay, left), min(delay * 2, LONGEST_DELAY_SECONDS)
        return current

    return next_delay


def retry_through_outage(call: Callable[[], T], tolerance_seconds: float, what: str) -> T:
    delays = backoff_delays(tolerance_seconds)
    while True:
        try:
            return call()
        except OUTAGE_ERRORS as error:
            delay = delays()
            if delay is None:
                raise
            log.warning("Redis unavailable during %s (%s); retrying", what, type(error).__name__)
            time.sleep(delay)

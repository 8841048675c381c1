"""Riding out a Redis outage: retry a command with backoff, for up to a limit in all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.redis_retry import OUTAGE_ERRORS

T = TypeVar("T")

# What Redis being unreachable (down, restarting, still loading its data, failing over)
# looks like to a client: the same errors the workers ride out.
UNREACHABLE = OUTAGE_ERRORS

FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0


class RedisOutage(Exception):
    """Redis stayed unreachable for longer than the tolerance."""


class OutageTolerance:
    """Retries commands while Redis is unreachable; the clock runs across commands.

    An outage is a run of failures with no success in between: a command that succeeds
    ends it, and one that fails once the outage has lasted ``seconds`` raises RedisOutage.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._since: float | None = None

    async def call(self, command: Callable[[], Awaitable[T]]) -> T:
        retry_in = FIRST_RETRY_SECONDS
        while True:
            try:
                result = await command()
            except UNREACHABLE as error:
                now = time.monotonic()
                if self._since is None:
                    self._since = now
                if now - self._since >= self._seconds:
                    raise RedisOutage(f"Redis unreachable for {now - self._since:.0f}s: {error}") from error
                await asyncio.sleep(retry_in)
                retry_in = min(2 * retry_in, MAX_RETRY_SECONDS)
                continue
            self._since = None
            return result

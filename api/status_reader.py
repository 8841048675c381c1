"""Sessions' status fields for many followers at once, in pipelined round trips.

Every follower that waits in vain looks up its session's status once a second (expired?
ended?). Thousands of those single HGETs cost the gateway far more CPU than the same reads
in one pipeline, so the lookups asked for while a pipeline is being sent, or in the same
turn of the event loop, go together in the next one. Nothing waits on purpose: a lone
lookup is sent at once.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

MAX_PIPELINE = 500


class StatusReader:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiting: list[tuple[str, asyncio.Future[str | None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def status(self, meta_key: str) -> str | None:
        """The ``status`` field of a session's meta hash; None if the hash is gone."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((meta_key, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # let the lookups of this turn of the loop join in
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_PIPELINE], self._waiting[MAX_PIPELINE:]
                await self._send_batch(batch)
        finally:
            self._sending = None
            for _, future in self._waiting:  # only if cancelled itself (the gateway stops)
                future.cancel()
            self._waiting = []

    async def _send_batch(self, batch: list[tuple[str, asyncio.Future[str | None]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for meta_key, _ in batch:
            pipe.hget(meta_key, "status")
        try:
            statuses = await pipe.execute()
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # each follower decides what a failure means to it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), status in zip(batch, statuses, strict=True):
            if not future.done():
                future.set_result(None if status is None else str(status))

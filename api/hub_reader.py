"""One reader of the stream hub: a blocking XREAD over its streams, on a connection of its own.

A stream added while the read blocks would wait for the read's timeout before it is
covered; the reader is woken instead with ``CLIENT UNBLOCK`` (sent on the shared pool),
which ends the blocked XREAD at once so that the next one includes the new stream. Where
the server refuses that command (restricted ACLs), reads block only briefly instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import KeyT, StreamIdT

from shared.events import DATA_FIELD, END_FIELD, entry_id_after, index_of_entry

log = logging.getLogger(__name__)

# XREAD with decoded responses: [(stream, [(entry_id, fields)])].
StreamsReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]

READ_BATCH = 1000
# How long one read blocks when nothing arrives. New streams wake it, so this bounds only
# how late a reader notices streams nobody follows any more.
BLOCK_MS = 1000
# Without CLIENT UNBLOCK, a new stream waits for the current read to time out.
BLOCK_MS_WITHOUT_WAKE = 50
WAKE_ATTEMPTS = 20
WAKE_RETRY_SECONDS = 0.005
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Event:
    index: int
    data: str
    end: bool

    @classmethod
    def of_entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        return cls(index_of_entry(entry_id), fields[DATA_FIELD], END_FIELD in fields)


class Subscriber(Protocol):
    def offer(self, events: list[Event]) -> None: ...


@dataclass(eq=False)
class WatchedStream:
    key: str
    cursor: int  # the last index read for it
    reader: HubReader
    subscribers: set[Subscriber] = field(default_factory=set)


class HubReader:
    def __init__(self, client: Redis, waker: Redis) -> None:
        self.streams: dict[str, WatchedStream] = {}
        self._client = client  # one connection, used only by this reader
        self._waker = waker
        self._client_id: int | None = None
        self._added = asyncio.Event()
        self._version = 0  # counts additions, so that a read can tell it is out of date
        self._reading: int | None = None  # the version the read in flight covers
        self._waking: asyncio.Task[None] | None = None
        self._can_wake = True
        self._stopping = False

    def add(self, stream: WatchedStream) -> None:
        self.streams[stream.key] = stream
        self._version += 1
        self._added.set()
        if self._reading is not None and self._can_wake and self._waking is None:
            self._waking = asyncio.create_task(self._wake())

    def remove(self, stream: WatchedStream) -> None:
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]

    async def close(self) -> None:
        """End ``run``: also where redis-py lets a cancellation pass while a reply arrives."""
        self._stopping = True
        self._added.set()
        if self._waking is not None:
            self._waking.cancel()
        await self._client.aclose()

    async def run(self) -> None:
        retry_in = FIRST_RETRY_SECONDS
        while not self._stopping:
            if not self.streams:
                self._added.clear()
                await self._added.wait()
                continue
            try:
                self._deliver(await self._read())
            except Exception as error:
                if self._stopping:
                    return
                if retry_in == FIRST_RETRY_SECONDS:
                    _log_failure(error)
                # The followers see an outage on their own commands and decide when to give
                # up; the reader keeps trying, from where it was, for those that stay.
                self._client_id = None  # a new connection has a new id
                await asyncio.sleep(retry_in)
                retry_in = min(2 * retry_in, MAX_RETRY_SECONDS)
                continue
            if retry_in != FIRST_RETRY_SECONDS:
                log.info("stream hub: reading from Redis again")
                retry_in = FIRST_RETRY_SECONDS

    async def _read(self) -> StreamsReply:
        if self._can_wake and self._client_id is None:
            try:
                self._client_id = int(await self._client.client_id())
            except ResponseError as error:
                self._cannot_wake(error)
        request: dict[KeyT, StreamIdT] = {
            key: entry_id_after(stream.cursor) for key, stream in self.streams.items()
        }
        self._reading = self._version
        try:
            block = BLOCK_MS if self._can_wake else BLOCK_MS_WITHOUT_WAKE
            reply = await self._client.xread(request, count=READ_BATCH, block=block)
        finally:
            self._reading = None
        return cast(StreamsReply, reply or [])

    def _deliver(self, reply: StreamsReply) -> None:
        for key, entries in reply:
            stream = self.streams.get(key)
            if stream is None or not entries:
                continue
            events = [Event.of_entry(entry_id, fields) for entry_id, fields in entries]
            stream.cursor = max(stream.cursor, events[-1].index)
            for subscriber in list(stream.subscribers):
                subscriber.offer(events)

    def _cannot_wake(self, error: ResponseError) -> None:
        message = "stream hub: Redis refuses CLIENT ID/UNBLOCK (%s); reads block for %d ms"
        log.warning(message, error, BLOCK_MS_WITHOUT_WAKE)
        self._can_wake = False

    async def _wake(self) -> None:
        """End the blocked read so that the next one covers the streams added since it began.

        CLIENT UNBLOCK answers 0 when the read has not reached the server yet (or has just
        returned): try again briefly, until a read that covers every stream is in flight.
        """
        try:
            for _ in range(WAKE_ATTEMPTS):
                if self._reading is None or self._reading == self._version:
                    return  # no read in flight, or the one in flight covers every stream
                if self._client_id is not None and await self._waker.client_unblock(self._client_id):
                    return
                await asyncio.sleep(WAKE_RETRY_SECONDS)
        except ResponseError as error:
            self._cannot_wake(error)
        except (RedisConnectionError, RedisTimeoutError):
            pass  # the read fails as well, and the next one covers every stream
        finally:
            self._waking = None


def _log_failure(error: Exception) -> None:
    if isinstance(error, (RedisConnectionError, RedisTimeoutError)):
        log.warning("stream hub: reading from Redis failed, retrying: %s", error)
    else:
        # Whatever it was, the streams of this reader must not stop for good.
        log.error("stream hub: a read failed, retrying", exc_info=error)

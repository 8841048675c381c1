"""The gateway's shared reads of session streams: one blocking XREAD serves many followers.

A follower replays a session's history itself (``replay``, a bounded number at a time),
then subscribes with the last index it has. The hub's readers (``api/hub_reader.py``) each
run one blocking XREAD over up to ``KEYS_PER_READ`` streams on a connection of their own
and hand what arrives to every subscriber of those streams. The gateway so holds a fixed
number of Redis connections however many clients follow streams, instead of one per
follower, and waiting for events costs no connection from the shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from api.attachments import Attachments
from api.hub_reader import READ_BATCH, Event, HubReader, StreamsReply, WatchedStream
from api.status_reader import StatusReader
from shared.events import entry_id_after

KEYS_PER_READ = 500
# Readers (each one connection) at most; past KEYS_PER_READ * MAX_READERS streams, each
# reader's XREAD covers more keys rather than the gateway opening more connections.
MAX_READERS = 32
# Replays reading at once: the rest wait, so that long replays cannot take the whole pool.
REPLAY_CONCURRENCY = 32
# Events buffered for one subscriber. Past it the buffer is dropped and the subscriber
# reads the missed range from Redis itself: a slow client costs no gateway memory.
MAX_PENDING_EVENTS = 2 * READ_BATCH

_hubs: weakref.WeakKeyDictionary[Redis, StreamHub] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class Subscription:
    """One follower's place at a stream: the events the hub passed it, not yet taken."""

    stream: WatchedStream
    cursor: int  # the last index the hub passed on (or the follower had when it joined)
    pending: list[Event] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, events: list[Event]) -> None:
        if events[-1].index <= self.cursor:
            return
        fresh = events if events[0].index > self.cursor else [e for e in events if e.index > self.cursor]
        self.pending.extend(fresh)
        self.cursor = fresh[-1].index
        if len(self.pending) > MAX_PENDING_EVENTS:
            self.pending.clear()
        self._arrived.set()

    def missing_until(self) -> int:
        """The last index the follower must read itself: before what is pending, or all passed on."""
        return self.pending[0].index - 1 if self.pending else self.cursor

    def take(self, after: int) -> list[Event]:
        taken = [e for e in self.pending if e.index > after]
        self.pending.clear()
        self._arrived.clear()
        return taken

    async def wait(self, within: float) -> bool:
        """Whether something arrived within ``within`` seconds."""
        if self.pending:
            return True
        self._arrived.clear()
        try:
            async with asyncio.timeout(within):
                await self._arrived.wait()
        except TimeoutError:
            return False
        return True


class StreamHub:
    def __init__(
        self,
        redis: Redis,
        connect_reader: Callable[[], Redis],
        outage_tolerance_seconds: float,
        keys_per_read: int = KEYS_PER_READ,
    ) -> None:
        self.redis = redis
        self.keys_per_read = keys_per_read
        self.outage_tolerance_seconds = outage_tolerance_seconds
        self._connect_reader = connect_reader
        self._streams: dict[str, WatchedStream] = {}
        self._readers: list[HubReader] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._replays = asyncio.Semaphore(REPLAY_CONCURRENCY)
        self.statuses = StatusReader(redis)
        self.attachments = Attachments()
        self.subscriptions = 0

    @classmethod
    def of(cls, redis: Redis) -> StreamHub:
        """The hub started for this Redis client (by the app's lifespan)."""
        hub = _hubs.get(redis)
        if hub is None:
            raise RuntimeError("no stream hub runs for this Redis client; start one with StreamHub.start")
        return hub

    def start(self) -> StreamHub:
        _hubs[self.redis] = self
        self._tasks.append(asyncio.create_task(self.attachments.run(), name="stream-hub-attachments"))
        return self

    async def close(self) -> None:
        _hubs.pop(self.redis, None)
        self.attachments.stop()
        for task in self._tasks:
            task.cancel()
        for reader in self._readers:
            await reader.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    def subscribe(self, key: str, after: int) -> Subscription:
        stream = self._streams.get(key)
        if stream is None:
            stream = WatchedStream(key, after, self._reader_with_room())
            self._streams[key] = stream
            stream.reader.add(stream)
        else:
            # The next read starts from the newcomer's place (the others skip what they have);
            # what a read already in flight returns past it, the newcomer reads itself.
            stream.cursor = min(stream.cursor, after)
        subscription = Subscription(stream, after)
        stream.subscribers.add(subscription)
        self.subscriptions += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        stream = subscription.stream
        if subscription not in stream.subscribers:
            return
        stream.subscribers.discard(subscription)
        self.subscriptions -= 1
        if not stream.subscribers:
            del self._streams[stream.key]
            stream.reader.remove(stream)

    async def replay(self, key: str, after: int, until: int | None = None) -> list[Event]:
        """Up to READ_BATCH events after ``after`` (and not past ``until``), without blocking.

        Indexes are contiguous, so the events up to ``until`` are the next ``until - after``.
        """
        count = READ_BATCH if until is None else max(1, min(READ_BATCH, until - after))
        async with self._replays:
            reply = await self.redis.xread({key: entry_id_after(after)}, count=count)
        if not reply:
            return []
        return [Event.of_entry(entry_id, fields) for entry_id, fields in cast(StreamsReply, reply)[0][1]]

    def _reader_with_room(self) -> HubReader:
        least_busy = min(self._readers, key=lambda reader: len(reader.streams), default=None)
        if least_busy is not None and (
            len(least_busy.streams) < self.keys_per_read or len(self._readers) >= MAX_READERS
        ):
            return least_busy
        reader = HubReader(self._connect_reader(), self.redis)
        self._readers.append(reader)
        self._tasks.append(asyncio.create_task(reader.run(), name=f"stream-hub-reader-{len(self._readers)}"))
        return reader

"""Follows a session's event stream: replay after an index, then live, until its end.

The history is read by the follower itself; live events come from the gateway's stream
hub (``api/stream_hub.py``), which reads every followed stream with a few shared blocking
reads. Whatever the hub did not pass on (it had read further when the follower joined, or
the follower fell behind and its buffer was dropped) the follower reads from Redis, so
every event comes exactly once and in order.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial

from redis.asyncio import Redis

from api.hub_reader import READ_BATCH, Event
from api.outage import OutageTolerance, RedisOutage
from api.session_store import SessionStore
from api.stream_hub import StreamHub, Subscription
from shared import keys
from shared.events import SessionStatus, dumps, error_object

__all__ = ["Event", "follow"]

# How long a follower waits for events before it looks around (session expired? client
# gone?). It bounds how late those are noticed, not how late events arrive.
IDLE_SECONDS = 1.0


async def follow(
    redis: Redis,
    store: SessionStore,
    session_id: str,
    after: int,
    attach_hold_seconds: float,
    fresh: bool = False,
) -> AsyncGenerator[list[Event]]:
    """Yield the session's events with index > ``after``, ending with its end event.

    Events come in batches: a replay or a burst costs one write to the client, not one per
    event. An empty batch means nothing arrived for a while, so that the caller can check
    on its client. While following, it keeps the session marked as attached, which is what
    auto-cancel watches. If Redis stays unreachable for longer than the hub's outage
    tolerance, the last batch is an error event.

    ``fresh``: the caller has just created the session, so there is no history to read
    first: the hub's reads start at the stream's beginning, and whatever the worker has
    already written comes with the first of them (two round trips fewer on a new
    request's way to its first token).
    """
    follower = _Follower(StreamHub.of(redis), store, session_id, after, attach_hold_seconds, fresh)
    try:
        async for batch in follower.batches():
            yield batch
    finally:
        # Here rather than in the inner generators: this one is what the caller closes.
        follower.leave()


class _Follower:
    def __init__(
        self,
        hub: StreamHub,
        store: SessionStore,
        session_id: str,
        after: int,
        hold_seconds: float,
        fresh: bool = False,
    ) -> None:
        self._hub = hub
        self._store = store
        self._session_id = session_id
        self._stream = keys.session_events(session_id)
        self._meta = keys.session_meta(session_id)
        self._hold_seconds = hold_seconds
        self._touch_due = 0.0
        self._retrying = OutageTolerance(hub.outage_tolerance_seconds)
        self._subscription: Subscription | None = None
        self.last = after
        self.finished = False
        self._fresh = fresh and after < 0

    def leave(self) -> None:
        if self._subscription is not None:
            self._hub.unsubscribe(self._subscription)
            self._hub.attachments.detach(self._session_id)
            self._subscription = None

    async def batches(self) -> AsyncIterator[list[Event]]:
        try:
            async for batch in self._events():
                yield batch
        except RedisOutage:
            lost = error_object(
                "The service lost contact with its Redis; resume this stream later.",
                "service_unavailable",
                "redis_unavailable",
            )
            yield [Event(self.last + 1, dumps(lost), True)]

    async def _events(self) -> AsyncIterator[list[Event]]:
        # Once the session is known to have ended, every event is already in the stream:
        # the replay reads them all (none, if the client resumed after the end event).
        if not self._fresh:
            ended = await self._has_ended()
            async for batch in self._replay():
                yield batch
            if self.finished or ended:
                return
        self._subscription = self._hub.subscribe(self._stream, self.last)
        # From now on the hub keeps the session marked as attached, with the others it follows.
        self._hub.attachments.attach(
            self._session_id, self._hold_seconds, self._store.touch_attached_many, self._touch_due
        )
        async for batch in self._live(self._subscription):
            yield batch
        self.leave()

    async def _live(self, subscription: Subscription) -> AsyncIterator[list[Event]]:
        while not self.finished:
            missing_until = subscription.missing_until()
            if missing_until > self.last:
                async for batch in self._replay(until=missing_until):
                    yield batch
                if not self.finished and self.last < missing_until:
                    # Redis no longer holds them: the stream expired, or was deleted.
                    async for batch in self._idle():
                        yield batch
                    self.last = max(self.last, missing_until)
            elif events := subscription.take(after=self.last):
                yield self._passed(events)
            elif not await subscription.wait(IDLE_SECONDS):
                async for batch in self._idle():
                    yield batch

    async def _idle(self) -> AsyncIterator[list[Event]]:
        status = await self._retrying.call(partial(self._hub.statuses.status, self._meta))
        if status is None:
            name = keys.client_session_id(self._session_id)
            expired = error_object(f"Session '{name}' has expired.", "not_found_error", "session_expired")
            self.finished = True
            yield [Event(self.last + 1, dumps(expired), True)]
        elif SessionStatus(status).is_terminal:
            # Its last events are in the stream: read what the hub has not passed on.
            async for batch in self._replay():
                yield batch
            self.finished = True
        else:
            yield []

    async def _replay(self, until: int | None = None) -> AsyncIterator[list[Event]]:
        """Read the events after ``last`` from Redis: up to ``until``, or all there are."""
        while not self.finished and (until is None or self.last < until):
            await self._touch_if_due()
            page = await self._retrying.call(partial(self._hub.replay, self._stream, self.last, until))
            if page:
                yield self._passed(page)
            if len(page) < READ_BATCH:
                return

    def _passed(self, events: list[Event]) -> list[Event]:
        self.last = events[-1].index
        self.finished = events[-1].end
        return events

    async def _has_ended(self) -> bool:
        status = await self._retrying.call(partial(self._hub.statuses.status, self._meta))
        return status is not None and SessionStatus(status).is_terminal

    async def _touch_if_due(self) -> None:
        now = time.monotonic()
        if self._subscription is None and now >= self._touch_due:
            touch = partial(self._store.touch_attached, self._session_id, self._hold_seconds)
            await self._retrying.call(touch)
            self._touch_due = now + self._hold_seconds / 3

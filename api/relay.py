"""Follows a session's event stream: replay after an index, then live, until its end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from api.session_store import SessionStore
from shared import keys
from shared.events import DATA_FIELD, END_FIELD, entry_id_after, error_object, dumps, index_of_entry

# How long one blocking read waits before the follower looks around (session expired?
# client gone?). It bounds how late those are noticed, not how late events arrive.
BLOCK_MS = 1000
READ_BATCH = 1000


@dataclass(frozen=True)
class Event:
    index: int
    data: str
    end: bool


async def follow(redis: Redis, store: SessionStore, session_id: str, after: int,
                 attach_hold_seconds: float) -> AsyncIterator[Event | None]:
    """Yield the session's events with index > ``after``, ending with its end event.

    Yields None whenever a blocking read times out, so that the caller can check on its
    client. While following, it keeps the session marked as attached, which is what
    auto-cancel watches.
    """
    stream = keys.session_events(session_id)
    last = after
    touch_due = 0.0
    while True:
        now = time.monotonic()
        if now >= touch_due:
            await store.touch_attached(session_id, attach_hold_seconds)
            touch_due = now + attach_hold_seconds / 3
        response = await redis.xread({stream: entry_id_after(last)}, count=READ_BATCH, block=BLOCK_MS)
        if not response:
            if not await redis.exists(keys.session_meta(session_id)):
                message = f"Session '{session_id}' has expired."
                yield Event(last + 1, dumps(error_object(message, "not_found_error", "session_expired")), True)
                return
            yield None
            continue
        for entry_id, fields in response[0][1]:
            last = index_of_entry(entry_id)
            end = END_FIELD in fields
            yield Event(last, fields[DATA_FIELD], end)
            if end:
                return

"""Follows a session's event stream: replay after an index, then live, until its end."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from api.session_store import SessionStore
from shared import keys
from shared.events import (
    DATA_FIELD,
    END_FIELD,
    SessionStatus,
    dumps,
    entry_id_after,
    error_object,
    index_of_entry,
)

# XREAD of one stream with decoded responses: [(stream, [(entry_id, fields)])].
StreamsReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]

# How long one blocking read waits before the follower looks around (session expired?
# client gone?). It bounds how late those are noticed, not how late events arrive.
BLOCK_MS = 1000
READ_BATCH = 1000


@dataclass(frozen=True)
class Event:
    index: int
    data: str
    end: bool


async def follow(
    redis: Redis, store: SessionStore, session_id: str, after: int, attach_hold_seconds: float
) -> AsyncGenerator[list[Event]]:
    """Yield the session's events with index > ``after``, ending with its end event.

    Events come in batches, one per stream read (up to READ_BATCH): a replay or a burst
    costs one read and one write to the client, not one per event. An empty batch means a
    blocking read timed out, so that the caller can check on its client. While following,
    it keeps the session marked as attached, which is what auto-cancel watches.
    """
    stream = keys.session_events(session_id)
    meta = keys.session_meta(session_id)
    last = after
    touch_due = 0.0
    # Once the session is known to have ended, every event is already in the stream:
    # reads stop blocking, and an empty read means the client has seen everything
    # (it resumed after the end event).
    ended = await _has_ended(redis, meta)
    while True:
        now = time.monotonic()
        if now >= touch_due:
            await store.touch_attached(session_id, attach_hold_seconds)
            touch_due = now + attach_hold_seconds / 3
        block = None if ended else BLOCK_MS
        response = await redis.xread({stream: entry_id_after(last)}, count=READ_BATCH, block=block)
        if not response:
            if ended:
                return
            status = await redis.hget(meta, "status")
            if status is None:
                expired = error_object(
                    f"Session '{session_id}' has expired.", "not_found_error", "session_expired"
                )
                yield [Event(last + 1, dumps(expired), True)]
                return
            ended = SessionStatus(str(status)).is_terminal
            yield []
            continue
        batch = [
            Event(index_of_entry(entry_id), fields[DATA_FIELD], END_FIELD in fields)
            for entry_id, fields in cast(StreamsReply, response)[0][1]
        ]
        last = batch[-1].index
        yield batch
        if batch[-1].end:
            return


async def _has_ended(redis: Redis, meta_key: str) -> bool:
    status = await redis.hget(meta_key, "status")
    return status is not None and SessionStatus(str(status)).is_terminal

"""Sessions written straight into Redis, in the worker's format, for the gateway-only runs.

A finished session looks like what FINISH leaves (shared/session_scripts.py): a meta hash
with status ``finished`` and the events ``0-1``...``0-n`` with field ``d``, the last one
also with ``e``. A live session is ``running`` and gets its events from a writer here
instead of a worker. Neither is put in the active set, so no reaper looks at them.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from api.auth import ANONYMOUS
from shared import keys
from shared.events import DATA_FIELD, END_FIELD, ChunkWriter, SessionStatus, dumps, usage_of

MODEL = "bench"
TTL_SECONDS = 600
WRITE_BATCH = 500
Fields = dict[FieldT, EncodableT]

# The XADD id that makes Redis number a session's entries 0-1, 0-2, ...
NEXT_ENTRY = "0-*"


def _meta(status: SessionStatus) -> Fields:
    now = int(time.time())
    return {
        "status": status.value,
        "created": now,
        "last_attached": now,
        "owner": ANONYMOUS,
        "model": MODEL,
        "job_id": "",
    }


async def write_finished_session(redis: Redis, session_id: str, events: int) -> None:
    """A finished session of exactly ``events`` events: role, text deltas, finish, usage."""
    if events < 3:
        raise ValueError("a finished session has at least 3 events (role, finish, usage)")
    chunks = ChunkWriter(session_id, MODEL, int(time.time()))
    deltas = events - 3
    usage = usage_of(16, deltas, deltas)
    payloads = [
        chunks.role(),
        *(chunks.delta(reasoning=f" word{n}") for n in range(deltas)),
        chunks.finish("length"),
        chunks.usage(usage),
    ]
    meta: Fields = {**_meta(SessionStatus.FINISHED), "finish_reason": "length", "usage": dumps(usage)}
    stream = keys.session_events(session_id)
    await redis.hset(keys.session_meta(session_id), mapping=meta)
    for first in range(0, len(payloads), WRITE_BATCH):
        pipe = redis.pipeline(transaction=False)
        for position in range(first, min(first + WRITE_BATCH, len(payloads))):
            fields: Fields = {DATA_FIELD: payloads[position]}
            if position == len(payloads) - 1:
                fields[END_FIELD] = "1"
            pipe.xadd(stream, fields, id=NEXT_ENTRY)
        await pipe.execute()
    for key in (keys.session_meta(session_id), stream):
        await redis.expire(key, TTL_SECONDS)


async def open_idle_sessions(redis: Redis, session_ids: list[str]) -> None:
    """Running sessions that never get an event: their followers only wait."""
    for first in range(0, len(session_ids), WRITE_BATCH):
        pipe = redis.pipeline(transaction=False)
        for session_id in session_ids[first : first + WRITE_BATCH]:
            pipe.hset(keys.session_meta(session_id), mapping=_meta(SessionStatus.RUNNING))
            pipe.expire(keys.session_meta(session_id), TTL_SECONDS)
        await pipe.execute()


class LiveSessions:
    """Running sessions that one writer feeds; each delta carries its write time as text."""

    def __init__(self, redis: Redis, session_ids: list[str]) -> None:
        self._redis = redis
        self.session_ids = session_ids
        self._chunks = {sid: ChunkWriter(sid, MODEL, int(time.time())) for sid in session_ids}
        self.written = 0

    async def open(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for session_id in self.session_ids:
            pipe.hset(keys.session_meta(session_id), mapping=_meta(SessionStatus.RUNNING))
            pipe.expire(keys.session_meta(session_id), TTL_SECONDS)
            self._add(pipe, session_id, self._chunks[session_id].role())
        await pipe.execute()

    async def append_to_all(self) -> None:
        """One delta event per session, in one round trip."""
        stamp = f"{time.time():.6f}"
        pipe = self._redis.pipeline(transaction=False)
        for session_id in self.session_ids:
            self._add(pipe, session_id, self._chunks[session_id].delta(content=stamp))
        await pipe.execute()

    async def finish(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for session_id in self.session_ids:
            self._add(pipe, session_id, self._chunks[session_id].finish("length"), end=True)
            pipe.hset(keys.session_meta(session_id), "status", SessionStatus.FINISHED.value)
        await pipe.execute()

    def _add(self, pipe: Pipeline, session_id: str, payload: str, end: bool = False) -> None:
        fields: Fields = {DATA_FIELD: payload}
        if end:
            fields[END_FIELD] = "1"
        pipe.xadd(keys.session_events(session_id), fields, id=NEXT_ENTRY)
        self.written += 1

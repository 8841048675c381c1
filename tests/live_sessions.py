"""Sessions written straight into Redis, as a worker would, for tests of the relay alone.

A session is a meta hash (status, owner) and a stream of events ``0-1``, ``0-2``, ...
whose field ``d`` holds the event's data and whose last entry also carries ``e``. These
sessions are not put in the active set, so no reaper touches them.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.typing import EncodableT, FieldT

from api.auth import ANONYMOUS
from shared import keys
from shared.events import DATA_FIELD, END_FIELD, SessionStatus

TTL_SECONDS = 600
Fields = dict[FieldT, EncodableT]


def open_session(redis: Redis, session_id: str, owner: str = ANONYMOUS, status: str = "running") -> None:
    """A session stored as the gateway stores it: under its owner's namespace."""
    now = int(time.time())
    meta = keys.session_meta(keys.owned_session(owner, session_id))
    fields: Fields = {"status": status, "created": now, "last_attached": now, "owner": owner, "model": "test"}
    redis.hset(meta, mapping=fields)
    redis.expire(meta, TTL_SECONDS)


def event_data(session_id: str, index: int) -> str:
    """What event ``index`` of a test session holds: it names its session and index."""
    return f'{{"session":"{session_id}","index":{index}}}'


def append(redis: Redis, session_id: str, first: int, count: int, end: bool = False) -> None:
    """Events ``first`` .. ``first + count - 1``; with ``end``, the last one ends the session.

    ``session_id`` is the stored id (``keys.owned_session``); the events name the client's id.
    """
    pipe = redis.pipeline(transaction=False)
    stream = keys.session_events(session_id)
    for index in range(first, first + count):
        fields: Fields = {DATA_FIELD: event_data(keys.client_session_id(session_id), index)}
        if end and index == first + count - 1:
            fields[END_FIELD] = "1"
        pipe.xadd(stream, fields, id=f"0-{index + 1}")
    if end:
        pipe.hset(keys.session_meta(session_id), "status", SessionStatus.FINISHED.value)
    pipe.expire(stream, TTL_SECONDS)
    pipe.execute()


def append_to_all(redis: Redis, session_ids: list[str], first: int, count: int, end: bool = False) -> None:
    for session_id in session_ids:
        append(redis, session_id, first, count, end)

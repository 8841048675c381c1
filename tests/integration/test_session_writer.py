"""The worker's session writer against a real Redis: retried and lost writes."""

from __future__ import annotations

from typing import cast

import pytest
import redis

from shared import keys
from shared.settings import Settings
from tests.integration.conftest import make_job, open_session
from worker.session_writer import SessionLost

Entries = list[tuple[bytes, dict[bytes, bytes]]]


def entries(connection: redis.Redis, session_id: str) -> Entries:
    return cast(Entries, connection.xrange(keys.session_events(session_id)))


def stored(connection: redis.Redis, session_id: str) -> list[str]:
    return [fields[b"d"].decode() for _, fields in entries(connection, session_id)]


def test_events_redis_lost_are_written_again_at_the_same_indexes(
    connection: redis.Redis, engine_settings: Settings
) -> None:
    job = make_job()
    writer = open_session(connection, engine_settings, job)
    for n in range(6):
        writer.emit(f"event {n}")
        writer.add_token(100 + n)
        writer.flush()
    # As after a restart from an append-only file a second behind: the last events are gone.
    stream, tokens = keys.session_events(job.session_id), keys.session_tokens(job.session_id)
    kept = entries(connection, job.session_id)[:3]
    connection.delete(stream)
    for entry_id, fields in kept:
        connection.xadd(stream, {b"d": fields[b"d"]}, id=entry_id)
    connection.ltrim(tokens, 0, 2)
    writer.emit("event 6")
    writer.add_token(106)
    writer.flush()
    assert stored(connection, job.session_id) == [f"event {n}" for n in range(7)]
    assert connection.lrange(tokens, 0, -1) == [str(100 + n).encode() for n in range(7)]
    assert writer.finish("finished", "stop", {}, ["end"])
    assert stored(connection, job.session_id)[-1] == "end"


def test_a_writer_whose_session_is_gone_stops(connection: redis.Redis, engine_settings: Settings) -> None:
    job = make_job()
    writer = open_session(connection, engine_settings, job)
    writer.emit("first")
    writer.flush()
    connection.flushdb()
    writer.emit("second")
    with pytest.raises(SessionLost):
        writer.flush()
    assert connection.keys("*") == []


def test_writes_go_on_after_redis_forgot_the_scripts(
    connection: redis.Redis, engine_settings: Settings
) -> None:
    # A restarted Redis has no scripts: the writes answered NOSCRIPT load them and go again.
    job = make_job()
    writer = open_session(connection, engine_settings, job)
    writer.emit("first")
    writer.flush()
    connection.script_flush()
    writer.emit("second")
    writer.add_token(7)
    writer.flush()
    assert stored(connection, job.session_id) == ["first", "second"]
    assert connection.lrange(keys.session_tokens(job.session_id), 0, -1) == [b"7"]

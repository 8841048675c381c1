"""The session state machine's Lua scripts against a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from shared import keys, session_scripts
from shared.events import END_FIELD
from tests.processes import RedisServer


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url(15), decode_responses=True)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


class Scripts:
    def __init__(self, db: redis.Redis) -> None:
        self.create = db.register_script(session_scripts.CREATE)
        self.start = db.register_script(session_scripts.START)
        self.finish = db.register_script(session_scripts.FINISH)
        self.cancel = db.register_script(session_scripts.CANCEL)
        self.fail = db.register_script(session_scripts.FAIL)


def create(db: redis.Redis, scripts: Scripts, sid: str) -> int:
    created = int(scripts.create(keys=keys.session_keys(sid), args=[sid, 100, "job", "", "m", 60]))
    if created:  # what a worker writes once it accepts the request
        db.xadd(keys.session_events(sid), {"d": "role"}, id="0-*")
    return created


def events(db: redis.Redis, sid: str) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], db.xrange(keys.session_events(sid)))


def test_create_is_once_only(db: redis.Redis) -> None:
    scripts = Scripts(db)
    assert create(db, scripts, "s") == 1
    assert create(db, scripts, "s") == 0
    assert db.hget(keys.session_meta("s"), "status") == "queued"
    assert events(db, "s") == [("0-1", {"d": "role"})]
    assert db.sismember(keys.active_sessions(), "s")
    assert 0 < db.ttl(keys.session_meta("s")) <= 60


def test_run_and_finish(db: redis.Redis) -> None:
    scripts = Scripts(db)
    create(db, scripts, "s")
    assert scripts.start(keys=keys.session_keys("s"), args=["w1", 5000, 60]) == "running"
    assert db.get(keys.session_lease("s")) == "w1"
    assert scripts.start(keys=keys.session_keys("s"), args=["w2", 5000, 60]) == "running"  # no double start
    db.xadd(keys.session_events("s"), {"d": "tok"}, id="0-*")
    assert (
        scripts.finish(
            keys=keys.session_keys("s"),
            args=["finished", "length", json.dumps({"x": 1}), 30, "s", "fin", "usage"],
        )
        == 1
    )
    assert [fields for _, fields in events(db, "s")] == [
        {"d": "role"},
        {"d": "tok"},
        {"d": "fin"},
        {"d": "usage", END_FIELD: "1"},
    ]
    meta = db.hgetall(keys.session_meta("s"))
    assert meta["status"] == "finished" and meta["finish_reason"] == "length"
    assert not db.exists(keys.session_lease("s"))
    assert not db.sismember(keys.active_sessions(), "s")
    assert 0 < db.ttl(keys.session_events("s")) <= 30
    # A second ending (a reaper racing the worker) changes nothing.
    assert scripts.fail(keys=keys.session_keys("s"), args=["dead", 30, "s", "0", "err"]) == 0
    assert len(events(db, "s")) == 4


def test_cancel_queued_ends_it_and_start_refuses(db: redis.Redis) -> None:
    scripts = Scripts(db)
    create(db, scripts, "s")
    assert scripts.cancel(keys=keys.session_keys("s"), args=[60, 30, "s", "{}", "cancelled"]) == "queued"
    assert db.hget(keys.session_meta("s"), "status") == "cancelled"
    assert scripts.start(keys=keys.session_keys("s"), args=["w1", 5000, 60]) == "cancelled"
    assert events(db, "s")[-1] == ("0-2", {"d": "cancelled", END_FIELD: "1"})
    assert scripts.cancel(keys=keys.session_keys("s"), args=[60, 30, "s", "{}", "x"]) == "cancelled"
    assert scripts.cancel(keys=keys.session_keys("nope"), args=[60, 30, "nope", "{}", "x"]) is None


def test_cancel_running_only_raises_the_flag(db: redis.Redis) -> None:
    scripts = Scripts(db)
    create(db, scripts, "s")
    scripts.start(keys=keys.session_keys("s"), args=["w1", 5000, 60])
    assert scripts.cancel(keys=keys.session_keys("s"), args=[60, 30, "s", "{}", "x"]) == "running"
    assert db.exists(keys.session_cancel("s"))
    assert db.hget(keys.session_meta("s"), "status") == "running"


def test_fail_only_if_dead_respects_a_live_lease(db: redis.Redis) -> None:
    scripts = Scripts(db)
    create(db, scripts, "s")
    scripts.start(keys=keys.session_keys("s"), args=["w1", 5000, 60])
    assert scripts.fail(keys=keys.session_keys("s"), args=["dead", 30, "s", "1", "err"]) == 0
    db.delete(keys.session_lease("s"))
    assert scripts.fail(keys=keys.session_keys("s"), args=["dead", 30, "s", "1", "err"]) == 1
    assert db.hget(keys.session_meta("s"), "status") == "failed"
    assert db.exists(keys.session_cancel("s"))  # a stalled worker will stop
    assert events(db, "s")[-1][1] == {"d": "err", END_FIELD: "1"}


def test_start_of_an_expired_session_says_gone(db: redis.Redis) -> None:
    scripts = Scripts(db)
    assert scripts.start(keys=keys.session_keys("never"), args=["w1", 5000, 60]) == "gone"
    create(db, scripts, "s")
    db.expire(keys.session_meta("s"), 5)
    assert scripts.start(keys=keys.session_keys("s"), args=["w1", 5000, 60]) == "running"
    assert db.ttl(keys.session_meta("s")) > 5  # time spent queued does not count

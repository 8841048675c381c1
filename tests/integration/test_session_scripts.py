"""The session state machine's Lua scripts, through their typed calls, against a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from shared import keys
from shared.events import END_FIELD
from shared.session_scripts import (
    Append,
    Appended,
    AppendMany,
    AppendReply,
    Cancel,
    Capacity,
    Create,
    Created,
    Fail,
    Finish,
    Finished,
    RenewLeases,
    Requeue,
    Requeued,
    RequeueMode,
    Start,
    SyncScripts,
)
from tests.processes import RedisServer


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url(15), decode_responses=True)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def scripts(db: redis.Redis) -> SyncScripts:
    return SyncScripts(db)


def create(scripts: SyncScripts, sid: str = "s", job_id: str = "job") -> Created:
    return scripts.run(
        Create(sid, now=100, request_id=job_id, owner="", model="m", keep_seconds=60, job_payload="{}")
    )


def start(scripts: SyncScripts, sid: str = "s", worker: str = "w1", job_id: str = "job") -> str:
    return scripts.run(Start(sid, worker=worker, job_id=job_id, lease_ms=5000, keep_seconds=60)).status


def append(
    scripts: SyncScripts,
    events: tuple[str, ...],
    tokens: tuple[int, ...],
    next_index: int,
    token_count: int,
    worker: str = "w1",
) -> Appended:
    call = Append(
        "s",
        worker=worker,
        next_index=next_index,
        token_count=token_count,
        keep_seconds=60,
        events=events,
        tokens=tokens,
    )
    return scripts.run(call).outcome


def finish(scripts: SyncScripts, event_count: int, worker: str = "w1") -> Finished:
    call = Finish(
        "s",
        worker=worker,
        status="finished",
        finish_reason="length",
        usage_json=json.dumps({"x": 1}),
        ttl=30,
        event_count=event_count,
        final_events=("fin", "usage"),
    )
    return scripts.run(call)


def requeue(
    scripts: SyncScripts, mode: RequeueMode, expected: str = "job", new: str = "job2", worker: str = ""
) -> Requeued:
    call = Requeue(
        "s",
        expected_job_id=expected,
        new_job_id=new,
        mode=mode,
        worker=worker,
        max_attempts=2,
        ttl=30,
        error_message="gave up",
        error_event="error-event",
    )
    return scripts.run(call)


def stream(db: redis.Redis, sid: str = "s") -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], db.xrange(keys.session_events(sid)))


def data(db: redis.Redis) -> list[str]:
    return [fields["d"] for _, fields in stream(db)]


def test_create_is_once_only_and_a_retry_recognises_itself(db: redis.Redis, scripts: SyncScripts) -> None:
    assert create(scripts) is Created.CREATED
    assert create(scripts) is Created.RETRIED  # the same request, its first reply lost
    assert create(scripts, job_id="other") is Created.EXISTS
    assert db.hget(keys.session_meta("s"), "status") == "queued"
    assert db.sismember(keys.active_sessions(), "s")
    assert 0 < db.ttl(keys.session_meta("s")) <= 60


def create_checked(scripts: SyncScripts, sid: str = "s", job_id: str = "job", max_depth: int = 2) -> Created:
    capacity = Capacity(keys.live_workers(), ("q:text", "q:media"), max_depth, now=1000.5)
    call = Create(
        sid,
        now=100,
        request_id=job_id,
        owner="",
        model="m",
        keep_seconds=60,
        job_payload="{}",
        capacity=capacity,
    )
    return scripts.run(call)


def test_create_checks_capacity_first_but_an_existing_session_is_attached_whatever_it(
    db: redis.Redis, scripts: SyncScripts
) -> None:
    db.zadd(keys.live_workers(), {"gone": 1000.0})  # its presence expired before now
    assert create_checked(scripts) is Created.NO_WORKER
    assert not db.exists(keys.session_meta("s"))
    db.zadd(keys.live_workers(), {"w1": 1005.0})
    db.rpush("q:text", "a")
    db.rpush("q:media", "b")  # the queues together hold their most
    assert create_checked(scripts) is Created.QUEUE_FULL
    assert not db.exists(keys.session_meta("s"))
    assert not db.sismember(keys.active_sessions(), "s")
    db.lpop("q:media")
    assert create_checked(scripts) is Created.CREATED
    db.rpush("q:media", "b")
    db.zrem(keys.live_workers(), "w1")
    assert create_checked(scripts) is Created.RETRIED
    assert create_checked(scripts, job_id="other") is Created.EXISTS


def test_run_and_finish(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    assert start(scripts, job_id="stale") == "stale"
    assert start(scripts) == "running"
    assert db.get(keys.session_lease("s")) == "w1"
    assert start(scripts, worker="w2") == "taken"  # no double start
    assert db.hget(keys.session_meta("s"), "worker") == "w1"
    assert append(scripts, ("role", "tok"), (7,), 0, 0) is Appended.OK
    assert finish(scripts, event_count=1) is Finished.BEHIND  # not every event is there yet
    assert finish(scripts, event_count=2, worker="w2") is Finished.NOT_OURS
    assert finish(scripts, event_count=2) is Finished.ENDED
    assert [(entry_id, fields) for entry_id, fields in stream(db)] == [
        ("0-1", {"d": "role"}),
        ("0-2", {"d": "tok"}),
        ("0-3", {"d": "fin"}),
        ("0-4", {"d": "usage", END_FIELD: "1"}),
    ]
    meta = db.hgetall(keys.session_meta("s"))
    assert meta["status"] == "finished" and meta["finish_reason"] == "length"
    for gone in (keys.session_lease("s"), keys.session_tokens("s"), keys.session_media("s")):
        assert not db.exists(gone)
    assert not db.sismember(keys.active_sessions(), "s")
    assert 0 < db.ttl(keys.session_events("s")) <= 30


def test_a_replayed_append_is_ignored(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    assert append(scripts, ("role",), (), 0, 0) is Appended.OK
    assert append(scripts, ("a", "b"), (1, 2), 1, 0) is Appended.OK
    # The same write again (its reply was lost and the pipeline was retried).
    assert append(scripts, ("a", "b"), (1, 2), 1, 0) is Appended.OK
    assert data(db) == ["role", "a", "b"]
    assert db.lrange(keys.session_tokens("s"), 0, -1) == ["1", "2"]


def test_an_append_that_does_not_fit_the_stream_is_refused(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    append(scripts, ("role", "a"), (1,), 0, 0)
    # Redis holds more than this writer thinks it wrote: someone else wrote there.
    assert append(scripts, ("x", "y"), (9,), 1, 0) is Appended.LOST
    # Redis holds less than the writer wrote (it lost recent writes): write again from there.
    assert append(scripts, ("c",), (3,), 4, 3) is Appended.BEHIND
    assert data(db) == ["role", "a"]


def test_writes_of_a_worker_that_lost_the_session_are_refused(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    assert append(scripts, ("role",), (), 0, 0, worker="w2") is Appended.LOST
    assert requeue(scripts, RequeueMode.HANDOVER, worker="w1") is Requeued.QUEUED
    assert append(scripts, ("role",), (), 0, 0) is Appended.LOST
    assert data(db) == []


def test_after_redis_lost_everything_no_key_is_left_without_a_ttl(
    db: redis.Redis, scripts: SyncScripts
) -> None:
    create(scripts)
    start(scripts)
    append(scripts, ("role",), (), 0, 0)
    db.flushdb()
    assert append(scripts, ("a",), (1,), 1, 0) is Appended.LOST
    assert finish(scripts, event_count=2) is Finished.NOT_OURS
    assert db.keys("*") == []


def test_the_append_reply_carries_a_cancel(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    cancel = Cancel(
        "s", flag_seconds=60, ttl=30, usage_json="{}", role_events=("role",), finish_events=("fin",)
    )
    assert scripts.run(cancel) == "running"
    assert append(scripts, ("role",), (), 0, 0) is Appended.CANCEL
    assert db.hget(keys.session_meta("s"), "status") == "running"  # its worker ends it


def test_cancel_queued_ends_it_and_start_refuses(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    cancel = Cancel(
        "s", flag_seconds=60, ttl=30, usage_json="{}", role_events=("role",), finish_events=("fin",)
    )
    assert scripts.run(cancel) == "queued"
    assert data(db) == ["role", "fin"]
    assert start(scripts) == "cancelled"
    assert scripts.run(cancel) == "cancelled"
    assert scripts.run(Cancel("none", 60, 30, "{}", ("role",), ("fin",))) is None


def test_cancel_queued_with_several_choices_ends_each(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    cancel = Cancel("s", 60, 30, "{}", role_events=("r0", "r1"), finish_events=("f0", "f1"))
    assert scripts.run(cancel) == "queued"
    assert data(db) == ["r0", "r1", "f0", "f1"]


def test_fail_with_a_worker_only_ends_that_workers_session(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    assert not scripts.run(Fail("s", message="m", ttl=30, error_event="err", worker="w2"))
    assert scripts.run(Fail("s", message="m", ttl=30, error_event="err", worker="w1"))
    assert db.hget(keys.session_meta("s"), "status") == "failed"
    assert stream(db)[-1][1] == {"d": "err", END_FIELD: "1"}


def test_a_dead_workers_session_is_queued_again_keeping_its_output(
    db: redis.Redis, scripts: SyncScripts
) -> None:
    create(scripts)
    start(scripts)
    append(scripts, ("role", "a"), (5, 6), 0, 0)
    assert requeue(scripts, RequeueMode.DEAD) is Requeued.SKIP  # its lease is alive
    db.delete(keys.session_lease("s"))
    assert requeue(scripts, RequeueMode.DEAD, expected="other") is Requeued.SKIP
    assert requeue(scripts, RequeueMode.DEAD) is Requeued.QUEUED
    assert requeue(scripts, RequeueMode.DEAD) is Requeued.SKIP  # a second gateway, too late
    assert start(scripts, job_id="job") == "stale"  # the old job can no longer run it
    started = scripts.run(Start("s", worker="w2", job_id="job2", lease_ms=5000, keep_seconds=60))
    assert (started.status, started.attempt, started.event_count, started.tokens) == ("running", 2, 2, (5, 6))


def test_a_session_queued_again_and_cancelled_sends_no_second_role_chunk(
    db: redis.Redis, scripts: SyncScripts
) -> None:
    create(scripts)
    start(scripts)
    append(scripts, ("r0", "r1", "a"), (5, 2**24 + 6), 0, 0)
    db.delete(keys.session_lease("s"))
    assert requeue(scripts, RequeueMode.DEAD) is Requeued.QUEUED
    cancel = Cancel("s", 60, 30, "{}", role_events=("r0", "r1"), finish_events=("f0", "f1"))
    assert scripts.run(cancel) == "queued"
    assert data(db) == ["r0", "r1", "a", "f0", "f1"]


def test_attempts_are_bounded(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    db.delete(keys.session_lease("s"))
    assert requeue(scripts, RequeueMode.DEAD) is Requeued.QUEUED
    start(scripts, worker="w2", job_id="job2")
    db.delete(keys.session_lease("s"))
    assert requeue(scripts, RequeueMode.DEAD, expected="job2", new="job3") is Requeued.FAILED
    assert db.hget(keys.session_meta("s"), "status") == "failed"
    assert data(db) == ["error-event"]


def test_a_handover_costs_no_attempt(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    start(scripts)
    for attempt in range(3):
        assert (
            requeue(scripts, RequeueMode.HANDOVER, f"job{attempt or ''}", f"job{attempt + 1}", "w1")
            is Requeued.QUEUED
        )
        assert start(scripts, job_id=f"job{attempt + 1}") == "running"
    assert db.hget(keys.session_meta("s"), "attempts") == "1"


def test_a_lost_queued_job_is_replaced(db: redis.Redis, scripts: SyncScripts) -> None:
    create(scripts)
    assert requeue(scripts, RequeueMode.LOST) is Requeued.QUEUED
    assert db.hget(keys.session_meta("s"), "job_id") == "job2"
    assert start(scripts, job_id="job2") == "running"
    assert requeue(scripts, RequeueMode.LOST, expected="job2", new="job3") is Requeued.SKIP  # it runs


def test_leases_are_renewed_only_for_the_workers_running_sessions(
    db: redis.Redis, scripts: SyncScripts
) -> None:
    for sid in ("a", "b"):
        create(scripts, sid)
        start(scripts, sid)
    create(scripts, "c")
    db.delete(keys.session_lease("a"))  # lapsed during a Redis stall
    assert scripts.run(RenewLeases("w1", 5000, ("a", "b", "c", "gone"))) == 2
    assert db.get(keys.session_lease("a")) == "w1"
    assert not db.exists(keys.session_lease("c"))
    assert scripts.run(RenewLeases("w2", 5000, ("a",))) == 0


def test_start_of_an_expired_session_says_gone(scripts: SyncScripts) -> None:
    assert start(scripts, "never-created") == "gone"


def test_one_run_appends_for_many_sessions_each_on_its_own_terms(
    db: redis.Redis, scripts: SyncScripts
) -> None:
    for sid in ("a", "b", "c"):
        create(scripts, sid)
    start(scripts, "a")
    start(scripts, "b", worker="w2")  # another worker's: this one's write is refused
    start(scripts, "c")
    scripts.run(Cancel("c", flag_seconds=60, ttl=30, usage_json="{}", role_events=(), finish_events=()))

    def part(sid: str, events: tuple[str, ...], tokens: tuple[int, ...]) -> Append:
        return Append(
            sid, worker="w1", next_index=0, token_count=0, keep_seconds=60, events=events, tokens=tokens
        )

    many = AppendMany((part("a", ("a0", "a1"), (5, 6, 7)), part("b", ("b0",), (8,)), part("c", ("c0",), ())))
    assert scripts.run(many) == [
        AppendReply(Appended.OK, 0, 0),
        AppendReply(Appended.LOST, 0, 0),
        AppendReply(Appended.CANCEL, 0, 0),
    ]
    assert [fields["d"] for _, fields in stream(db, "a")] == ["a0", "a1"]
    assert db.lrange(keys.session_tokens("a"), 0, -1) == ["5", "6", "7"]
    assert db.xlen(keys.session_events("b")) == 0
    assert [fields["d"] for _, fields in stream(db, "c")] == ["c0"]
    # The same run again is a replay: recognised, nothing written twice.
    assert scripts.run(many)[0] == AppendReply(Appended.OK, 2, 3)
    assert db.xlen(keys.session_events("a")) == 2

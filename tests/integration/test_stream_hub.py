"""The relay and its stream hub against a real Redis: every follower gets exactly its events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from api import hub_reader, redis_clients, stream_hub
from api.redis_clients import command_client, reader_client
from api.relay import Event, follow
from api.session_store import SessionStore
from api.stream_hub import StreamHub
from shared import keys
from shared.settings import Settings
from tests.live_sessions import append, append_to_all, event_data, open_session
from tests.processes import RedisServer

DB = 13
POOL_CONNECTIONS = 20
HOLD_SECONDS = 3.0


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    url = redis_server.url(DB)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def writer(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@contextlib.asynccontextmanager
async def running_hub(
    redis_url: str, keys_per_read: int = 500
) -> AsyncIterator[tuple[StreamHub, SessionStore]]:
    settings = Settings(redis_url=redis_url, gateway_redis_connections=POOL_CONNECTIONS)
    client = command_client(settings)
    hub = StreamHub(client, lambda: reader_client(settings), 60.0, keys_per_read).start()
    try:
        yield hub, SessionStore(client, settings)
    finally:
        await hub.close()
        await client.aclose()


async def follow_all(hub: StreamHub, store: SessionStore, session_id: str, after: int = -1) -> list[Event]:
    events: list[Event] = []
    async for batch in follow(hub.redis, store, session_id, after, HOLD_SECONDS):
        events.extend(batch)
    return events


async def wait_for(condition: object, what: str) -> None:
    assert callable(condition)
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def assert_exactly(events: list[Event], session_id: str, first: int, last: int) -> None:
    assert [e.index for e in events] == list(range(first, last + 1))
    assert [e.data for e in events] == [event_data(session_id, i) for i in range(first, last + 1)]
    assert [e.end for e in events] == [False] * (last - first) + [True]


def connections_to(client: redis.Redis, db: int) -> int:
    return sum(1 for entry in client.client_list() if int(entry["db"]) == db)


def test_many_followers_on_few_connections_each_get_exactly_their_events(
    redis_url: str, writer: redis.Redis
) -> None:
    sessions = [f"hub-{n}" for n in range(200)]
    followed = sessions + sessions[:40]  # some sessions have two followers
    rounds, per_round = 10, 3

    async def scenario() -> None:
        for session_id in sessions:
            open_session(writer, session_id)
        async with running_hub(redis_url, keys_per_read=50) as (hub, store):
            tasks = [asyncio.create_task(follow_all(hub, store, sid)) for sid in followed]
            await wait_for(lambda: hub.subscriptions == len(followed), "every follower to subscribe")
            assert hub.reader_count == 4
            for round_ in range(rounds):
                await asyncio.to_thread(append_to_all, writer, sessions, round_ * per_round, per_round)
                await asyncio.sleep(0.02)
            # One blocking read per reader, not one per follower; the command pool is bounded.
            assert connections_to(writer, DB) <= POOL_CONNECTIONS + hub.reader_count + 1
            await asyncio.to_thread(append_to_all, writer, sessions, rounds * per_round, 1, True)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert hub.subscriptions == 0
        for session_id, events in zip(followed, results, strict=True):
            assert_exactly(events, session_id, 0, rounds * per_round)

    asyncio.run(scenario())


def test_followers_joining_late_or_resuming_get_history_then_live(
    redis_url: str, writer: redis.Redis
) -> None:
    async def scenario() -> None:
        open_session(writer, "late")
        append(writer, "late", 0, 25)
        async with running_hub(redis_url) as (hub, store):
            early = asyncio.create_task(follow_all(hub, store, "late"))
            await wait_for(lambda: hub.subscriptions == 1, "the first follower to subscribe")
            append(writer, "late", 25, 5)
            resumed = asyncio.create_task(follow_all(hub, store, "late", after=12))
            await wait_for(lambda: hub.subscriptions == 2, "the second follower to subscribe")
            append(writer, "late", 30, 5, end=True)
            early_events, resumed_events = await asyncio.wait_for(asyncio.gather(early, resumed), 30)
        assert_exactly(early_events, "late", 0, 34)
        assert_exactly(resumed_events, "late", 13, 34)

    asyncio.run(scenario())


def test_a_new_sessions_follower_reads_no_history_yet_misses_nothing_written_before_it(
    redis_url: str, writer: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fresh``: the request that created the session subscribes at once; the worker may
    have written its first events (or all of them) by then."""
    replays: list[str] = []

    async def scenario() -> tuple[list[Event], list[Event]]:
        open_session(writer, "fresh")
        append(writer, "fresh", 0, 3)
        open_session(writer, "fresh-done")
        append(writer, "fresh-done", 0, 2, end=True)
        async with running_hub(redis_url) as (hub, store):
            replay = hub.replay

            async def counted(key: str, after: int, until: int | None = None) -> list[Event]:
                replays.append(key)
                return await replay(key, after, until)

            monkeypatch.setattr(hub, "replay", counted)
            batches = follow(hub.redis, store, "fresh", -1, HOLD_SECONDS, fresh=True)
            first = asyncio.create_task(anext(batches))
            await wait_for(lambda: hub.subscriptions == 1, "the follower to subscribe")
            events = list(await asyncio.wait_for(first, 10))
            append(writer, "fresh", 3, 2, end=True)
            async for batch in batches:
                events.extend(batch)
            done = [
                e
                async for batch in follow(hub.redis, store, "fresh-done", -1, HOLD_SECONDS, True)
                for e in batch
            ]
        return events, done

    events, done = asyncio.run(scenario())
    assert_exactly(events, "fresh", 0, 4)
    assert_exactly(done, "fresh-done", 0, 1)
    assert replays == []


def test_a_follower_too_slow_for_its_buffer_reads_what_it_missed_from_redis(
    redis_url: str, writer: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_hub, "MAX_PENDING_EVENTS", 5)

    async def scenario() -> None:
        open_session(writer, "slow")
        async with running_hub(redis_url) as (hub, store):
            batches = follow(hub.redis, store, "slow", -1, HOLD_SECONDS)
            first = asyncio.create_task(anext(batches))
            await wait_for(lambda: hub.subscriptions == 1, "the follower to subscribe")
            append(writer, "slow", 0, 1)
            events = list(await asyncio.wait_for(first, 10))
            # The follower is paused at its yield while the hub keeps reading.
            for start in range(1, 51, 5):
                append(writer, "slow", start, 5)
                await asyncio.sleep(0.05)
            append(writer, "slow", 51, 1, end=True)
            async for batch in batches:
                events.extend(batch)
        assert_exactly(events, "slow", 0, 51)

    asyncio.run(scenario())


def test_a_session_that_vanishes_ends_its_stream_with_session_expired(
    redis_url: str, writer: redis.Redis
) -> None:
    async def scenario() -> None:
        open_session(writer, "gone")
        append(writer, "gone", 0, 2)
        async with running_hub(redis_url) as (hub, store):
            task = asyncio.create_task(follow_all(hub, store, "gone"))
            await wait_for(lambda: hub.subscriptions == 1, "the follower to subscribe")
            assert writer.exists(keys.session_attached("gone"))
            writer.delete(keys.session_meta("gone"), keys.session_events("gone"))
            events = await asyncio.wait_for(task, 30)
        assert [e.index for e in events] == [0, 1, 2]
        assert events[-1].end
        assert json.loads(events[-1].data)["error"]["code"] == "session_expired"

    asyncio.run(scenario())


def test_resuming_after_the_end_event_yields_nothing(redis_url: str, writer: redis.Redis) -> None:
    async def scenario() -> list[Event]:
        open_session(writer, "done")
        append(writer, "done", 0, 4, end=True)
        async with running_hub(redis_url) as (hub, store):
            assert_exactly(await follow_all(hub, store, "done"), "done", 0, 3)
            return await asyncio.wait_for(follow_all(hub, store, "done", after=3), 10)

    assert asyncio.run(scenario()) == []


async def events_through(batches: AsyncIterator[list[Event]], index: int) -> list[Event]:
    """The events up to ``index``, without waiting for the stream's end."""
    events: list[Event] = []
    async for batch in batches:
        events.extend(batch)
        if events and events[-1].index >= index:
            break
    return events


def test_a_stream_added_while_a_read_blocks_is_read_at_once(
    redis_url: str, writer: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reads that block for a minute: the new stream must not wait for the one in flight.
    monkeypatch.setattr(hub_reader, "BLOCK_MS", 60_000)
    monkeypatch.setattr(redis_clients, "BLOCK_MS", 60_000)

    async def scenario() -> list[Event]:
        for session_id in ("waiting", "added"):
            open_session(writer, session_id)
        async with running_hub(redis_url) as (hub, store):
            waiting = asyncio.create_task(follow_all(hub, store, "waiting"))
            await wait_for(lambda: hub.subscriptions == 1, "the first follower to subscribe")
            batches = follow(hub.redis, store, "added", -1, HOLD_SECONDS)
            added = asyncio.create_task(events_through(batches, 1))
            await wait_for(lambda: hub.subscriptions == 2, "the second follower to subscribe")
            append(writer, "added", 0, 2)
            try:
                # Still running: only the hub can pass these on (no follower reads them itself).
                return await asyncio.wait_for(added, 10)
            finally:
                await batches.aclose()
                waiting.cancel()

    assert [event.index for event in asyncio.run(scenario())] == [0, 1]


def test_where_redis_refuses_client_commands_the_hub_still_delivers(
    redis_url: str, writer: redis.Redis
) -> None:
    writer.acl_setuser(
        "no-client", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all", "-client"]
    )
    restricted_url = redis_url.replace("redis://", "redis://no-client:secret@")

    async def scenario() -> tuple[list[Event], list[Event]]:
        for session_id in ("one", "two"):
            open_session(writer, session_id)
        async with running_hub(restricted_url) as (hub, store):
            one = asyncio.create_task(follow_all(hub, store, "one"))
            await wait_for(lambda: hub.subscriptions == 1, "the first follower to subscribe")
            two = asyncio.create_task(follow_all(hub, store, "two"))
            await wait_for(lambda: hub.subscriptions == 2, "the second follower to subscribe")
            append(writer, "one", 0, 3, end=True)
            append(writer, "two", 0, 4, end=True)
            return await asyncio.wait_for(asyncio.gather(one, two), 30)

    try:
        one, two = asyncio.run(scenario())
    finally:
        writer.acl_deluser("no-client")
    assert_exactly(one, "one", 0, 2)
    assert_exactly(two, "two", 0, 3)


def test_followed_sessions_are_marked_attached_in_one_round_trip(redis_url: str, writer: redis.Redis) -> None:
    session_ids = [f"attached-{n}" for n in range(5)]
    for session_id in session_ids:
        open_session(writer, session_id, status="running")
        writer.hset(keys.session_meta(session_id), "last_attached", 0)

    async def renew() -> list[BaseException | None]:
        async with running_hub(redis_url) as (_, store):
            return await store.touch_attached_many([(s, HOLD_SECONDS) for s in [*session_ids, "gone"]])

    assert asyncio.run(renew()) == [None] * 6
    for session_id in session_ids:
        assert writer.exists(keys.session_attached(session_id))
        assert 0 < writer.pttl(keys.session_attached(session_id)) <= HOLD_SECONDS * 1000
        assert int(writer.hget(keys.session_meta(session_id), "last_attached") or 0) > 0
    assert not writer.exists(keys.session_attached("gone"))  # no mark for a session that is gone

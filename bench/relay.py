"""The gateway alone: replaying a finished session, and relaying live sessions to many clients.

No model runs here: sessions are written straight into Redis (bench.sessions) and clients
follow them with ``GET /v1/sessions/{id}/stream``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis

from bench.cpu_use import process_cpu_s
from bench.results import LiveRelayResult, ReplayResult
from bench.sessions import LiveSessions, open_idle_sessions, write_finished_session
from bench.sse import http_client, sse_data
from bench.stats import Percentiles

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 60.0
DRAIN_TIMEOUT_SECONDS = 120.0


@dataclass
class Follow:
    """What one client following one session saw."""

    events: int = 0
    lags: list[float] = field(default_factory=list)  # write-to-receive, for time-stamped deltas
    done: bool = False
    error: str | None = None

    def complete(self, expected_events: int) -> bool:
        return self.error is None and self.done and self.events == expected_events

    def problem(self, expected_events: int) -> str | None:
        if self.error is not None:
            return self.error
        if not self.done:
            return "the stream ended without [DONE]"
        if self.events != expected_events:
            return f"got {self.events} events, expected {expected_events}"
        return None


async def follow_session(
    client: httpx.AsyncClient,
    base_url: str,
    session_id: str,
    on_open: Callable[[], None] = lambda: None,
    stamped: bool = False,
) -> Follow:
    """Read the session's whole stream; ``on_open`` is called once, when it starts or fails.

    With ``stamped``, content deltas hold their write time, and the lag of each is noted.
    """
    follow = Follow()
    opened = False
    try:
        async with client.stream("GET", f"{base_url}/v1/sessions/{session_id}/stream") as response:
            opened = True
            on_open()
            if response.status_code != 200:
                follow.error = f"HTTP {response.status_code}"
                return follow
            async for data in sse_data(response):
                if data == "[DONE]":
                    follow.done = True
                    break
                follow.events += 1
                if stamped:
                    _note_lag(follow, data)
    except httpx.HTTPError as error:
        follow.error = f"{type(error).__name__}: {error}"
    finally:
        if not opened:
            on_open()
    return follow


def _note_lag(follow: Follow, data: str) -> None:
    for choice in json.loads(data).get("choices") or []:
        stamp = choice.get("delta", {}).get("content")
        if stamp:
            follow.lags.append(time.time() - float(stamp))


async def measure_replay(
    base_url: str, redis_url: str, gateway_pid: int, events: int, runs: int, clients: int
) -> ReplayResult:
    """One client replaying a finished session ``runs`` times, then ``clients`` at once."""
    session_id = f"bench-replay-{uuid.uuid4().hex[:12]}"
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        await write_finished_session(redis, session_id, events)
    finally:
        await redis.aclose()
    log.info("replay of a %d-event session: %d runs, then %d clients at once", events, runs, clients)
    async with http_client(clients + 8, DRAIN_TIMEOUT_SECONDS) as client:

        async def replay() -> tuple[float, Follow]:
            start = time.perf_counter()
            follow = await follow_session(client, base_url, session_id)
            return time.perf_counter() - start, follow

        await replay()  # warm-up
        single = [await replay() for _ in range(runs)]
        cpu = CpuClock(gateway_pid)
        start = time.perf_counter()
        together = await asyncio.gather(*(replay() for _ in range(clients)))
        wall = time.perf_counter() - start
        gateway_cpu, client_cpu = cpu.spent()
    problems = [f.problem(events) for _, f in [*single, *together] if not f.complete(events)]
    delivered = sum(f.events for _, f in together)
    return ReplayResult(
        events=events,
        runs=runs,
        single_ms=Percentiles.of_seconds([seconds for seconds, _ in single]),
        concurrent_clients=clients,
        concurrent_ms=Percentiles.of_seconds([seconds for seconds, _ in together]),
        concurrent_events_per_s=delivered / wall,
        failures=len(problems),
        first_error=problems[0] if problems else None,
        gateway_cpu_s=gateway_cpu,
        client_cpu_s=client_cpu,
    )


class Arrivals:
    """Counts clients whose stream has opened (or failed to)."""

    def __init__(self, expected: int) -> None:
        self._left = expected
        self.all = asyncio.Event()
        if expected <= 0:
            self.all.set()

    def arrive(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self.all.set()

    async def wait(self, within: float) -> None:
        try:
            await asyncio.wait_for(self.all.wait(), within)
        except TimeoutError:
            raise RuntimeError(f"{self._left} clients had no response after {within:g}s") from None


async def write_steadily(live: LiveSessions, rate: float, seconds: float) -> int:
    """Append one event to every session ``rate`` times a second, on a fixed schedule."""
    loop = asyncio.get_running_loop()
    ticks = max(1, round(rate * seconds))
    start = loop.time()
    for tick in range(ticks):
        delay = start + tick / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await live.append_to_all()
    return ticks


@dataclass(frozen=True)
class LiveRun:
    """How the writing went, and the CPU both sides used meanwhile."""

    ticks: int
    written_in: float
    drained_in: float
    gateway_cpu: float | None
    client_cpu: float


async def measure_live(
    base_url: str,
    redis_url: str,
    gateway_pid: int,
    clients: int,
    sessions: int,
    rate: float,
    seconds: float,
    held: int = 0,
) -> LiveRelayResult:
    """``clients`` followers spread over ``sessions`` running sessions fed at ``rate`` events/s each.

    With ``held``, that many more streams are opened first, on sessions that never get an
    event, and kept open throughout: what waiting on many streams costs the live ones.
    """
    log.info("live relay: %d clients on %d sessions, %g events/s each, %gs", clients, sessions, rate, seconds)
    redis = Redis.from_url(redis_url, decode_responses=True)
    tasks: list[asyncio.Task[Follow]] = []
    idle: list[asyncio.Task[Follow]] = []
    try:
        live = LiveSessions(redis, [f"bench-live-{uuid.uuid4().hex[:12]}" for _ in range(sessions)])
        await live.open()
        async with http_client(clients + held + 8, DRAIN_TIMEOUT_SECONDS + seconds) as client:
            try:
                await _hold_idle_streams(client, base_url, redis, held, idle)
                arrivals = Arrivals(clients)
                followed = [live.session_ids[n % sessions] for n in range(clients)]
                tasks = [
                    asyncio.create_task(follow_session(client, base_url, sid, arrivals.arrive, True))
                    for sid in followed
                ]
                await arrivals.wait(CONNECT_TIMEOUT_SECONDS)
                run = await _write_then_drain(live, tasks, gateway_pid, rate, seconds)
                # An idle stream has nothing to end it: one that ended has broken.
                broken = sum(task.done() for task in idle)
            finally:
                for task in [*tasks, *idle]:
                    task.cancel()
                await asyncio.gather(*tasks, *idle, return_exceptions=True)
    finally:
        await redis.aclose()
    result = _live_result([_outcome(task) for task in tasks], run, sessions, rate, seconds)
    return dataclasses.replace(result, held_streams=held, held_failures=broken)


async def _hold_idle_streams(
    client: httpx.AsyncClient, base_url: str, redis: Redis, count: int, tasks: list[asyncio.Task[Follow]]
) -> None:
    """Open ``count`` streams (added to ``tasks``) on sessions that never get an event."""
    if count <= 0:
        return
    log.info("opening %d idle streams", count)
    session_ids = [f"bench-idle-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    await open_idle_sessions(redis, session_ids)
    arrivals = Arrivals(count)
    tasks.extend(
        asyncio.create_task(follow_session(client, base_url, session_id, arrivals.arrive))
        for session_id in session_ids
    )
    # Opening thousands of streams takes a while on a small machine.
    await arrivals.wait(CONNECT_TIMEOUT_SECONDS + count / 100)


async def _write_then_drain(
    live: LiveSessions, tasks: list[asyncio.Task[Follow]], gateway_pid: int, rate: float, seconds: float
) -> LiveRun:
    cpu = CpuClock(gateway_pid)
    start = time.perf_counter()
    ticks = await write_steadily(live, rate, seconds)
    written_in = time.perf_counter() - start
    await live.finish()
    await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_SECONDS)
    drained_in = time.perf_counter() - start
    gateway_cpu, client_cpu = cpu.spent()
    return LiveRun(ticks, written_in, drained_in, gateway_cpu, client_cpu)


def _live_result(
    follows: list[Follow], run: LiveRun, sessions: int, rate: float, seconds: float
) -> LiveRelayResult:
    expected_per_client = run.ticks + 2  # role, the deltas, finish
    problems = [f.problem(expected_per_client) for f in follows if not f.complete(expected_per_client)]
    delivered = sum(len(f.lags) for f in follows)
    return LiveRelayResult(
        clients=len(follows),
        sessions=sessions,
        rate_per_session=rate,
        seconds=seconds,
        written_events=run.ticks * sessions,
        expected_events=run.ticks * len(follows),
        delivered_events=delivered,
        offered_per_s=run.ticks * len(follows) / run.written_in,
        delivered_per_s=delivered / run.drained_in,
        failures=len(problems),
        lag_ms=Percentiles.of_seconds([lag for f in follows for lag in f.lags]),
        first_error=problems[0] if problems else None,
        gateway_cpu_s=run.gateway_cpu,
        client_cpu_s=run.client_cpu,
    )


def _outcome(task: asyncio.Task[Follow]) -> Follow:
    """A follower's result; one still running when time ran out counts as failed."""
    if task.cancelled():
        return Follow(error=f"still running {DRAIN_TIMEOUT_SECONDS:g}s after the last event")
    return task.result()


class CpuClock:
    """CPU time used since it was made: by the gateway process, and by this process."""

    def __init__(self, gateway_pid: int) -> None:
        self._pid = gateway_pid
        self._gateway = _process_cpu_seconds(gateway_pid)
        self._client = time.process_time()

    def spent(self) -> tuple[float | None, float]:
        gateway = _process_cpu_seconds(self._pid)
        used = gateway - self._gateway if gateway is not None and self._gateway is not None else None
        return used, time.process_time() - self._client


def _process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (Linux /proc), None where unavailable."""
    try:
        return process_cpu_s(pid)
    except OSError:
        return None

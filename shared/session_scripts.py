"""The session state machine as Lua scripts, each with one typed call that builds its ARGV.

queued -> running -> finished | cancelled | failed, queued -> cancelled | failed, and
running -> queued when a session changes worker (its worker died, or handed it over).
A terminal transition writes the session's last events (ending with the end mark) in the
same step, so a follower can never see a terminal status without its final events, and two
parties (a worker finishing, a gateway declaring it dead) can never both end a session.

Event ``n`` is stream entry ``0-(n+1)``, written with that explicit id: the writer owns the
index, so a write that is retried (a lost reply, a pipeline replayed after a reconnect) is
recognised and ignored instead of duplicating events.

Every script takes the keys of ``shared.keys.session_keys`` in that order:
meta, events, cancel, lease, attached, active, tokens, media. The gateway (redis.asyncio)
and the worker (redis) both call the scripts through the classes below, so the argument
order of each script is written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline

from shared import keys

R = TypeVar("R")

# What a script call accepts as ARGV items.
ScriptArg = str | int | float

_COMMON = """
local function is_open(status)
  return status == 'queued' or status == 'running'
end
-- Append ARGV[first..last] as the next events (explicit ids); with `final` the last one
-- carries the end mark.
local function append_events(first, last, final)
  local n = redis.call('XLEN', KEYS[2])
  for i = first, last do
    n = n + 1
    if final and i == last then
      redis.call('XADD', KEYS[2], '0-' .. n, 'd', ARGV[i], 'e', '1')
    else
      redis.call('XADD', KEYS[2], '0-' .. n, 'd', ARGV[i])
    end
  end
end
-- Set the terminal status, append the final events, drop the session from the active set,
-- delete what only an open session needs, and let the rest expire `ttl` seconds from now.
local function end_session(status, fields, ttl, session_id, first)
  redis.call('HSET', KEYS[1], 'status', status, 'ended', redis.call('TIME')[1], unpack(fields))
  append_events(first, #ARGV, true)
  redis.call('SREM', KEYS[6], session_id)
  redis.call('DEL', KEYS[4], KEYS[7], KEYS[8])
  for i = 1, 3 do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
"""

CREATE = """
local request = redis.call('HGET', KEYS[1], 'request_id')
if request then
  if request == ARGV[3] then return 2 end
  return 0
end
-- The capacity check, when asked for: KEYS[9] the live workers (scored by expiry),
-- KEYS[10..] the queues; ARGV[8] the time now, ARGV[9] the most jobs the queues may hold.
if #KEYS > 8 then
  if redis.call('ZCOUNT', KEYS[9], '(' .. ARGV[8], '+inf') == 0 then return 3 end
  local depth = 0
  for i = 10, #KEYS do
    depth = depth + redis.call('LLEN', KEYS[i])
  end
  if depth >= tonumber(ARGV[9]) then return 4 end
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'created', ARGV[2], 'last_attached', ARGV[2],
  'job_id', ARGV[3], 'request_id', ARGV[3], 'owner', ARGV[4], 'model', ARGV[5], 'job', ARGV[7],
  'attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SADD', KEYS[6], ARGV[1])
return 1
"""

START = """
local meta = redis.call('HMGET', KEYS[1], 'status', 'job_id')
if not meta[1] then return {'gone'} end
if meta[1] == 'running' then return {'taken'} end
if meta[1] ~= 'queued' then return {meta[1]} end
if meta[2] ~= ARGV[2] then return {'stale'} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started', redis.call('TIME')[1])
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
for _, key in ipairs({KEYS[2], KEYS[7], KEYS[8]}) do
  redis.call('EXPIRE', key, ARGV[4])
end
local reply = {'running', attempt, redis.call('XLEN', KEYS[2])}
for _, token in ipairs(redis.call('LRANGE', KEYS[7], 0, -1)) do
  reply[#reply + 1] = token
end
return reply
"""

_APPEND_ONE = """
-- One session's append: its keys from KEYS[k + 1] (meta, events, cancel, ..., tokens at
-- k + 7), its arguments from ARGV[a]: worker, next index, token count, keep seconds, the
-- number of events, the number of tokens, then the events and the tokens. Returns the
-- reply and where the next session's arguments start.
local function append_one(k, a)
  local meta_key, events_key, cancel_key, tokens_key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 7]
  local n_events, n_tokens = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local first_event = a + 6
  local first_token = first_event + n_events
  local after = first_token + n_tokens
  local meta = redis.call('HMGET', meta_key, 'status', 'worker')
  if meta[1] ~= 'running' or meta[2] ~= ARGV[a] then return {'lost', 0, 0}, after end
  local next_index, token_count = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local xlen, tlen = redis.call('XLEN', events_key), redis.call('LLEN', tokens_key)
  local replayed = xlen == next_index + n_events and tlen == token_count + n_tokens
  if not replayed then
    if xlen < next_index or tlen < token_count then return {'behind', xlen, tlen}, after end
    if xlen ~= next_index or tlen ~= token_count then return {'lost', xlen, tlen}, after end
    for i = 0, n_events - 1 do
      redis.call('XADD', events_key, '0-' .. (next_index + i + 1), 'd', ARGV[first_event + i])
    end
    if n_tokens > 0 then
      redis.call('RPUSH', tokens_key, unpack(ARGV, first_token, after - 1))
    end
    redis.call('EXPIRE', events_key, ARGV[a + 3])
    redis.call('EXPIRE', tokens_key, ARGV[a + 3])
  end
  if redis.call('EXISTS', cancel_key) == 1 then return {'cancel', xlen, tlen}, after end
  return {'ok', xlen, tlen}, after
end
"""

APPEND = (
    _APPEND_ONE
    + """
return (append_one(0, 1))
"""
)

# Every session of a decoding step in one run: Redis wakes a gateway's blocked XREAD after
# a command, so one script for the batch wakes it once, where a pipeline of one script per
# session woke it after the first and again for the rest.
APPEND_MANY = (
    _APPEND_ONE
    + """
local replies, a = {}, 1
for k = 0, #KEYS - 1, 8 do
  local reply
  reply, a = append_one(k, a)
  replies[#replies + 1] = reply
end
return replies
"""
)

FINISH = (
    _COMMON
    + """
local meta = redis.call('HMGET', KEYS[1], 'status', 'worker')
if meta[1] ~= 'running' or meta[2] ~= ARGV[1] then return 0 end
if redis.call('XLEN', KEYS[2]) ~= tonumber(ARGV[7]) then return -1 end
end_session(ARGV[2], {'finish_reason', ARGV[3], 'usage', ARGV[4]}, ARGV[5], ARGV[6], 8)
return 1
"""
)

CANCEL = (
    _COMMON
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not is_open(status) then return status end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
if status == 'queued' then
  -- ARGV[5] role events follow it, then the finish events. A session queued again after
  -- a worker died has already sent its role chunks.
  local first = 6
  if redis.call('XLEN', KEYS[2]) > 0 then first = 6 + tonumber(ARGV[5]) end
  end_session('cancelled', {'finish_reason', 'cancelled', 'usage', ARGV[4]}, ARGV[2], ARGV[3], first)
end
return status
"""
)

FAIL = (
    _COMMON
    + """
local meta = redis.call('HMGET', KEYS[1], 'status', 'worker')
if not is_open(meta[1]) then return 0 end
if ARGV[4] ~= '' and (meta[1] ~= 'running' or meta[2] ~= ARGV[4]) then return 0 end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
end_session('failed', {'error', ARGV[1], 'finish_reason', 'error'}, ARGV[2], ARGV[3], 5)
return 1
"""
)

REQUEUE = (
    _COMMON
    + """
local meta = redis.call('HMGET', KEYS[1], 'status', 'job_id', 'worker', 'attempts')
local mode = ARGV[3]
if not is_open(meta[1]) or meta[2] ~= ARGV[1] then return 'skip' end
if mode == 'dead' and (meta[1] ~= 'running' or redis.call('EXISTS', KEYS[4]) == 1) then
  return 'skip'
end
if mode == 'handover' and meta[1] == 'running' and meta[3] ~= ARGV[4] then return 'skip' end
if mode == 'lost' and meta[1] ~= 'queued' then return 'skip' end
local attempts = tonumber(meta[4] or '0')
if mode == 'lost' then
  -- A job lost before any worker started it still counts, or it could be lost forever.
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
elseif mode == 'handover' and meta[1] == 'running' then
  -- A worker that shuts down cleanly costs the session nothing.
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', -1)
end
if mode ~= 'handover' and attempts >= tonumber(ARGV[5]) then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[6])
  end_session('failed', {'error', ARGV[8], 'finish_reason', 'error'}, ARGV[6], ARGV[7], 9)
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'job_id', ARGV[2])
redis.call('HDEL', KEYS[1], 'worker')
redis.call('DEL', KEYS[4])
return 'queued'
"""
)

TOUCH_ATTACHED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_attached', ARGV[2])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[1])
return 1
"""

# KEYS: meta and lease of each session, in pairs. ARGV: worker, lease milliseconds.
# Renews the lease of every session the worker still runs; returns how many it renewed.
RENEW_LEASES = """
local renewed = 0
for i = 1, #KEYS, 2 do
  local meta = redis.call('HMGET', KEYS[i], 'status', 'worker')
  if meta[1] == 'running' and meta[2] == ARGV[1] then
    redis.call('SET', KEYS[i + 1], ARGV[1], 'PX', ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ScriptCall(Generic[R]):
    """One call of one script: its keys, its ARGV in order, and how to read its reply."""

    SOURCE: ClassVar[str]

    def keys(self) -> list[str]:
        raise NotImplementedError

    def args(self) -> list[ScriptArg]:
        raise NotImplementedError

    def parse(self, reply: Any) -> R:
        raise NotImplementedError


@dataclass(frozen=True)
class SessionCall(ScriptCall[R]):
    session_id: str

    def keys(self) -> list[str]:
        return keys.session_keys(self.session_id)


class Created(StrEnum):
    CREATED = "created"
    RETRIED = "retried"  # this very request created it already (its first reply was lost)
    EXISTS = "exists"
    NO_WORKER = "no_worker"  # not created: no worker announces itself
    QUEUE_FULL = "queue_full"  # not created: the queues hold their most jobs


@dataclass(frozen=True)
class Capacity:
    """What a new session's creation checks first: a live worker, and room in the queues."""

    live_workers_key: str
    queue_keys: tuple[str, ...]
    max_queue_depth: int
    now: float


@dataclass(frozen=True)
class Create(SessionCall[Created]):
    """Create a queued session; ``request_id`` (the first job id) makes a retry recognisable.

    The stream starts empty: its first event is the worker's verdict on the request (the
    role chunk once the prompt is accepted, or an error), so a gateway can still answer a
    request the worker refuses with a plain HTTP error.
    """

    SOURCE: ClassVar[str] = CREATE
    now: int
    request_id: str
    owner: str
    model: str
    keep_seconds: int
    job_payload: str
    # Checked in the same call, after an existing session (which is attached to whatever
    # the capacity) and before the new one is written; None creates it regardless.
    capacity: Capacity | None = None

    def keys(self) -> list[str]:
        session = super().keys()
        if self.capacity is None:
            return session
        return [*session, self.capacity.live_workers_key, *self.capacity.queue_keys]

    def args(self) -> list[ScriptArg]:
        args: list[ScriptArg] = [
            self.session_id,
            self.now,
            self.request_id,
            self.owner,
            self.model,
            self.keep_seconds,
            self.job_payload,
        ]
        if self.capacity is not None:
            args += [self.capacity.now, self.capacity.max_queue_depth]
        return args

    def parse(self, reply: Any) -> Created:
        outcomes = {1: Created.CREATED, 2: Created.RETRIED, 3: Created.NO_WORKER, 4: Created.QUEUE_FULL}
        return outcomes.get(int(reply), Created.EXISTS)


@dataclass(frozen=True)
class Started:
    # 'running' when this worker now owns the session; otherwise do not run: 'taken' (another
    # worker runs it), 'stale' (it was queued again under another job), 'gone' (expired),
    # or the terminal status it has.
    status: str
    attempt: int = 0
    event_count: int = 0
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class Start(SessionCall[Started]):
    """Move the session from queued to running for ``job_id`` (a stale job is refused).

    The hash is kept for keep seconds from the start of the run, so time spent queued does
    not count against it. The reply carries what a worker taking over needs: how many
    events the stream has and the tokens generated so far.
    """

    SOURCE: ClassVar[str] = START
    worker: str
    job_id: str
    lease_ms: int
    keep_seconds: int

    def args(self) -> list[ScriptArg]:
        return [self.worker, self.job_id, self.lease_ms, self.keep_seconds]

    def parse(self, reply: Any) -> Started:
        status = _text(reply[0])
        if status != "running":
            return Started(status)
        return Started(status, int(reply[1]), int(reply[2]), tuple(int(_text(t)) for t in reply[3:]))


class Appended(StrEnum):
    OK = "ok"
    CANCEL = "cancel"  # written; a cancel is requested
    LOST = "lost"  # the session is no longer this worker's (ended, taken over, or gone)
    BEHIND = "behind"  # Redis lost recent writes: rewrite from the counts it has


@dataclass(frozen=True)
class AppendReply:
    outcome: Appended
    event_count: int
    token_count: int


@dataclass(frozen=True)
class Append(SessionCall[AppendReply]):
    """Append a step's events at ``next_index`` and its tokens, if the session is still ours.

    A replay of a write that already happened is recognised by the counts and ignored.
    """

    SOURCE: ClassVar[str] = APPEND
    worker: str
    next_index: int
    token_count: int
    keep_seconds: int
    events: tuple[str, ...]
    tokens: tuple[int, ...]

    def args(self) -> list[ScriptArg]:
        head: list[ScriptArg] = [
            self.worker,
            self.next_index,
            self.token_count,
            self.keep_seconds,
            len(self.events),
            len(self.tokens),
        ]
        return [*head, *self.events, *self.tokens]

    def parse(self, reply: Any) -> AppendReply:
        return AppendReply(Appended(_text(reply[0])), int(reply[1]), int(reply[2]))


@dataclass(frozen=True)
class AppendMany(ScriptCall[list[AppendReply]]):
    """Several sessions' appends in one script run (a decoding step's, for its whole batch);
    one reply per session, in order. Its keys span sessions: one Redis, not a cluster."""

    SOURCE: ClassVar[str] = APPEND_MANY
    parts: tuple[Append, ...]

    def keys(self) -> list[str]:
        return [key for part in self.parts for key in part.keys()]  # noqa: SIM118 (a method, not a dict)

    def args(self) -> list[ScriptArg]:
        return [arg for part in self.parts for arg in part.args()]

    def parse(self, reply: Any) -> list[AppendReply]:
        return [part.parse(one) for part, one in zip(self.parts, reply, strict=True)]


class Finished(StrEnum):
    ENDED = "ended"
    NOT_OURS = "not_ours"  # already ended, or no longer this worker's
    BEHIND = "behind"  # the stream does not hold every event yet


@dataclass(frozen=True)
class Finish(SessionCall[Finished]):
    SOURCE: ClassVar[str] = FINISH
    worker: str
    status: str  # finished | cancelled
    finish_reason: str
    usage_json: str
    ttl: int
    event_count: int  # events the stream must already hold
    final_events: tuple[str, ...]

    def args(self) -> list[ScriptArg]:
        head: list[ScriptArg] = [
            self.worker,
            self.status,
            self.finish_reason,
            self.usage_json,
            self.ttl,
            self.session_id,
            self.event_count,
        ]
        return [*head, *self.final_events]

    def parse(self, reply: Any) -> Finished:
        return {1: Finished.ENDED, -1: Finished.BEHIND}.get(int(reply), Finished.NOT_OURS)


@dataclass(frozen=True)
class Cancel(SessionCall[str | None]):
    """Raise the cancel flag; a queued session ends at once (its job will never run), a
    running one when its worker sees the flag. Replies the status before, or None."""

    SOURCE: ClassVar[str] = CANCEL
    flag_seconds: int
    ttl: int
    usage_json: str
    # The first and the last events of a session cancelled while queued: with n choices,
    # one role chunk and one finish chunk per choice.
    role_events: tuple[str, ...]
    finish_events: tuple[str, ...]

    def args(self) -> list[ScriptArg]:
        return [
            self.flag_seconds,
            self.ttl,
            self.session_id,
            self.usage_json,
            len(self.role_events),
            *self.role_events,
            *self.finish_events,
        ]

    def parse(self, reply: Any) -> str | None:
        return _text(reply) if reply else None


@dataclass(frozen=True)
class Fail(SessionCall[bool]):
    """End an open session with an error event; with ``worker``, only if that worker runs it.

    Also raises the cancel flag, so that a worker that was merely stalled stops.
    """

    SOURCE: ClassVar[str] = FAIL
    message: str
    ttl: int
    error_event: str
    worker: str = ""

    def args(self) -> list[ScriptArg]:
        return [self.message, self.ttl, self.session_id, self.worker, self.error_event]

    def parse(self, reply: Any) -> bool:
        return bool(reply)


class RequeueMode(StrEnum):
    DEAD = "dead"  # running, and its worker's lease is gone
    LOST = "lost"  # queued, and its RQ job can no longer run it
    # handed back by the worker that runs it (or took its job) as that worker shuts down
    HANDOVER = "handover"


class Requeued(StrEnum):
    QUEUED = "queued"  # the caller must now enqueue ``new_job_id``
    FAILED = "failed"  # its attempts ran out: it ended with an error event
    SKIP = "skip"  # nothing to do (another party acted first, or the worker is alive)


@dataclass(frozen=True)
class Requeue(SessionCall[Requeued]):
    """Queue a session again under a new job id, if it is still in the state ``mode`` says.

    ``expected_job_id`` makes the transition happen once when several gateways see the same
    dead worker. Attempts are counted per session, so a request that kills every worker it
    lands on fails after ``max_attempts`` instead of taking the fleet down.
    """

    SOURCE: ClassVar[str] = REQUEUE
    expected_job_id: str
    new_job_id: str
    mode: RequeueMode
    worker: str
    max_attempts: int
    ttl: int
    error_message: str
    error_event: str

    def args(self) -> list[ScriptArg]:
        return [
            self.expected_job_id,
            self.new_job_id,
            self.mode.value,
            self.worker,
            self.max_attempts,
            self.ttl,
            self.session_id,
            self.error_message,
            self.error_event,
        ]

    def parse(self, reply: Any) -> Requeued:
        return Requeued(_text(reply))


@dataclass(frozen=True)
class TouchAttached(SessionCall[bool]):
    """Record that a client follows the session (what auto-cancel watches)."""

    SOURCE: ClassVar[str] = TOUCH_ATTACHED
    hold_ms: int
    now: int

    def args(self) -> list[ScriptArg]:
        return [self.hold_ms, self.now]

    def parse(self, reply: Any) -> bool:
        return bool(reply)


@dataclass(frozen=True)
class RenewLeases(ScriptCall[int]):
    """Renew, in one call, the lease of every session the worker still runs.

    A lease is set again even if it expired (a Redis restart or a long stall can let it
    lapse), but only for a session that is still running on this worker.
    """

    SOURCE: ClassVar[str] = RENEW_LEASES
    worker: str
    lease_ms: int
    session_ids: tuple[str, ...]

    def keys(self) -> list[str]:
        return [key for sid in self.session_ids for key in (keys.session_meta(sid), keys.session_lease(sid))]

    def args(self) -> list[ScriptArg]:
        return [self.worker, self.lease_ms]

    def parse(self, reply: Any) -> int:
        return int(reply)


ALL_CALLS: tuple[type[ScriptCall[Any]], ...] = (
    Create,
    Start,
    Append,
    AppendMany,
    Finish,
    Cancel,
    Fail,
    Requeue,
    TouchAttached,
    RenewLeases,
)


class SyncScripts:
    """The scripts registered on a synchronous connection (the worker's)."""

    def __init__(self, connection: redis.Redis) -> None:
        self._scripts = {call: connection.register_script(call.SOURCE) for call in ALL_CALLS}

    def run(self, call: ScriptCall[R]) -> R:
        script = self._scripts[type(call)]
        return call.parse(script(keys=call.keys(), args=call.args()))

    def queue(self, call: ScriptCall[Any], pipe: redis.client.Pipeline) -> None:
        """Add the call to a pipeline; read its reply with ``call.parse`` after ``execute``."""
        self._scripts[type(call)](keys=call.keys(), args=call.args(), client=pipe)


class AsyncScripts:
    """The scripts registered on an asyncio connection (the gateway's)."""

    def __init__(self, connection: AsyncRedis) -> None:
        self._scripts = {call: connection.register_script(call.SOURCE) for call in ALL_CALLS}

    async def run(self, call: ScriptCall[R]) -> R:
        script = self._scripts[type(call)]
        return call.parse(await script(keys=call.keys(), args=call.args()))

    async def queue(self, call: ScriptCall[Any], pipe: AsyncPipeline) -> None:
        """Add the call to a pipeline; read its reply with ``call.parse`` after ``execute``."""
        await self._scripts[type(call)](keys=call.keys(), args=call.args(), client=pipe)

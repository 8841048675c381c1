"""The session state machine as Lua scripts, so that every transition is atomic.

queued -> running -> finished | cancelled | failed, and queued -> cancelled | failed.
A terminal transition writes the session's last events (ending with the end mark) in the
same step, so a follower can never see a terminal status without its final events, and two
parties (a worker finishing, a gateway declaring it dead) can never both end a session.

Every script takes the keys of ``shared.keys.session_keys`` in that order:
meta, events, cancel, lease, attached, active.
"""

from __future__ import annotations

# What a script call accepts as ARGV items.
ScriptArg = str | int | float

# Shared by the terminal scripts: set the status, append the final events (ARGV from
# `first`), mark the last one as the end, drop the session from the active set and let
# everything expire `ttl` seconds from now.
_END_SESSION = """
local function end_session(status, fields, ttl, session_id, first)
  redis.call('HSET', KEYS[1], 'status', status, 'ended', redis.call('TIME')[1], unpack(fields))
  for i = first, #ARGV do
    if i == #ARGV then
      redis.call('XADD', KEYS[2], '0-*', 'd', ARGV[i], 'e', '1')
    else
      redis.call('XADD', KEYS[2], '0-*', 'd', ARGV[i])
    end
  end
  redis.call('SREM', KEYS[6], session_id)
  redis.call('DEL', KEYS[4])
  for i = 1, 3 do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
local function is_open(status)
  return status == 'queued' or status == 'running'
end
"""

# ARGV: session_id, now, job_id, owner, model, keep_seconds.
# Returns 1 when created, 0 when the session already exists (the caller attaches).
# The stream starts empty: its first event is the worker's verdict on the request (the
# role chunk once the prompt is accepted, or an error), so a gateway can still answer a
# request the worker refuses with a plain HTTP error.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'created', ARGV[2], 'last_attached', ARGV[2],
  'job_id', ARGV[3], 'owner', ARGV[4], 'model', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SADD', KEYS[6], ARGV[1])
return 1
"""

# ARGV: worker name, lease milliseconds, keep seconds. Returns the status the session now
# has, or 'gone' if it expired. The hash is kept for keep seconds from the start of the run,
# so time spent queued does not count against it; the events stream, created by the
# worker's first event, gets the same expiry from the worker's first flush.
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'gone' end
if status ~= 'queued' then return status end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1],
  'started', redis.call('TIME')[1])
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'running'
"""

# ARGV: status (finished|cancelled), finish_reason, usage json, ttl, session_id, events...
# Returns 1 when this call ended the session.
FINISH = (
    _END_SESSION
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not is_open(status) then return 0 end
end_session(ARGV[1], {'finish_reason', ARGV[2], 'usage', ARGV[3]}, ARGV[4], ARGV[5], 6)
return 1
"""
)

# ARGV: cancel flag seconds, ttl, session_id, usage json, events to end a queued session.
# Raises the flag; a queued session ends at once (its job will never run), a running one
# ends when its worker sees the flag. Returns the status before the call, or false.
CANCEL = (
    _END_SESSION
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not is_open(status) then return status end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
if status == 'queued' then
  end_session('cancelled', {'finish_reason', 'cancelled', 'usage', ARGV[4]}, ARGV[2], ARGV[3], 5)
end
return status
"""
)

# ARGV: error message, ttl, session_id, only_if_dead ('1'|'0'), error event payload.
# With only_if_dead, fails a running session only when its worker's lease has expired.
# Also raises the cancel flag so that a worker that was merely stalled stops.
FAIL = (
    _END_SESSION
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not is_open(status) then return 0 end
if ARGV[4] == '1' and (status ~= 'running' or redis.call('EXISTS', KEYS[4]) == 1) then
  return 0
end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
end_session('failed', {'error', ARGV[1], 'finish_reason', 'error'}, ARGV[2], ARGV[3], 5)
return 1
"""
)

# ARGV: attach marker milliseconds, now. Records that a client follows the session.
TOUCH_ATTACHED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_attached', ARGV[2])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[1])
return 1
"""

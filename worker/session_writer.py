"""The worker's side of a session: its state transitions and the events it appends."""

from __future__ import annotations

import redis

from shared import keys, session_scripts
from shared.events import DATA_FIELD, ChunkWriter, SessionStatus, dumps, error_object
from shared.jobs import GenerationJob
from shared.session_scripts import ScriptArg
from shared.settings import Settings


class SessionScripts:
    """The session scripts, registered once per Redis connection."""

    def __init__(self, connection: redis.Redis) -> None:
        self.start = connection.register_script(session_scripts.START)
        self.finish = connection.register_script(session_scripts.FINISH)
        self.fail = connection.register_script(session_scripts.FAIL)


class SessionWriter:
    """Appends one session's events; every flush is one Redis round trip.

    Events of a decoding step are buffered and written together with the read of the
    cancel flag, so checking for cancellation at every step costs no extra round trip.
    """

    def __init__(
        self,
        connection: redis.Redis,
        scripts: SessionScripts,
        settings: Settings,
        job: GenerationJob,
    ) -> None:
        self._redis = connection
        self._scripts = scripts
        self._settings = settings
        self.session_id = job.session_id
        self._keys = keys.session_keys(job.session_id)
        self._events_key = keys.session_events(job.session_id)
        self._cancel_key = keys.session_cancel(job.session_id)
        self.chunks = ChunkWriter(job.session_id, job.model, job.created)
        self._pending: list[str] = []
        self._stream_expires = False

    def start(self, worker_name: str) -> SessionStatus | None:
        """Move the session from queued to running; any other answer means: do not run.

        None: the session has expired.
        """
        lease_ms = int(self._settings.worker_lease_seconds * 1000)
        args: list[ScriptArg] = [worker_name, lease_ms, self._settings.session_keep_seconds]
        reply = self._scripts.start(keys=self._keys, args=args)
        status = reply.decode() if isinstance(reply, bytes) else str(reply)
        return None if status == "gone" else SessionStatus(status)

    def emit(self, payload: str) -> None:
        self._pending.append(payload)

    def queue_flush(self, pipe: redis.client.Pipeline) -> int:
        """Add this session's buffered events and its cancel-flag read to a pipeline.

        Returns how many replies they will produce.
        """
        for payload in self._pending:
            pipe.xadd(self._events_key, {DATA_FIELD: payload}, id="0-*")
        replies = len(self._pending) + 1
        if self._pending and not self._stream_expires:
            # The stream lives as long as the session's hash, even if nothing ends it.
            pipe.expire(self._events_key, self._settings.session_keep_seconds, nx=True)
            self._stream_expires = True
            replies += 1
        pipe.exists(self._cancel_key)
        return replies

    def flushed(self, replies: list[object]) -> bool:
        """Take the pipeline's replies for this session; true if a cancel is requested."""
        self._pending.clear()
        return bool(replies[-1])

    def flush(self) -> bool:
        """Write the buffered events and return whether a cancel has been requested."""
        return flush_together(self._redis, [self])[0]

    def finish(
        self, status: SessionStatus, finish_reason: str, usage: dict[str, object], final_events: list[str]
    ) -> bool:
        """End the session with its last events; false if it had already ended."""
        self.flush()
        args: list[ScriptArg] = [
            status.value,
            finish_reason,
            dumps(usage),
            self._settings.sessions_ttl_seconds,
            self.session_id,
        ]
        return bool(self._scripts.finish(keys=self._keys, args=[*args, *final_events]))

    def fail(
        self,
        message: str,
        error_type: str = "server_error",
        code: str = "generation_failed",
        param: str | None = None,
    ) -> bool:
        """End the session with an error event (the worker itself stays up)."""
        self._pending.clear()
        payload = dumps(error_object(message, error_type, code=code, param=param))
        args: list[ScriptArg] = [message, self._settings.sessions_ttl_seconds, self.session_id, "0", payload]
        return bool(self._scripts.fail(keys=self._keys, args=args))


def flush_together(connection: redis.Redis, writers: list[SessionWriter]) -> list[bool]:
    """Flush several sessions in one Redis round trip; returns each one's cancel flag.

    The engine calls this once per decoding step for its whole batch.
    """
    pipe = connection.pipeline(transaction=False)
    sizes = [writer.queue_flush(pipe) for writer in writers]
    replies = pipe.execute()
    flags = []
    start = 0
    for writer, size in zip(writers, sizes, strict=True):
        flags.append(writer.flushed(replies[start : start + size]))
        start += size
    return flags

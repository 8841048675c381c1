"""The worker's side of a session: its state transitions and the events it appends.

The writer keeps every event and token of its session in memory and knows how many of
each Redis already holds, so a write can be retried as often as needed (the APPEND script
recognises a replay), and if Redis lost recent writes (a restart from an AOF that was a
second behind) the missing tail is written again, identical, at the same indices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from shared import keys
from shared.events import ChunkWriter, dumps, error_object, stored_token
from shared.jobs import GenerationJob
from shared.redis_retry import retry_through_outage
from shared.responses import ResponseEvents, ResponseSpec
from shared.session_scripts import (
    Append,
    Appended,
    AppendMany,
    AppendReply,
    Fail,
    Finish,
    Finished,
    Start,
    Started,
    SyncScripts,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

# Items per APPEND call: Lua's unpack() has a limit, and a rewrite may be long.
WRITE_CHUNK = 1000

T = TypeVar("T")


class SessionLost(Exception):
    """The session is no longer this worker's: it ended, was taken over, or Redis lost it."""


class SessionWriter:
    """Appends one session's events; every flush is one Redis round trip.

    Events of a decoding step are buffered and written together with the read of the
    cancel flag, so checking for cancellation at every step costs no extra round trip.
    """

    def __init__(
        self,
        scripts: SyncScripts,
        settings: Settings,
        job: GenerationJob,
        worker: str,
    ) -> None:
        self._scripts = scripts
        self._settings = settings
        self._worker = worker
        self.session_id = job.session_id
        self.chunks: ChunkWriter | ResponseEvents
        client_id = keys.client_session_id(job.session_id)
        if job.api == "responses":
            spec = job.response or ResponseSpec()
            self.chunks = ResponseEvents(client_id, job.model, job.created, spec, lambda: len(self.events))
        else:
            self.chunks = ChunkWriter(client_id, job.model, job.created)
        self._ttl = job.ttl_seconds or settings.sessions_ttl_seconds
        self.events: list[str] = []  # every event of the session; the list index is its index
        self.tokens: list[int] = []  # every token generated for it (``stored_token``)
        self._written_events = 0
        self._written_tokens = 0
        self.lost = False
        self.cancel_requested = False

    def start(self, job_id: str) -> Started:
        """Move the session from queued to running; any status but 'running' means: do not run."""
        call = Start(
            self.session_id,
            worker=self._worker,
            job_id=job_id,
            lease_ms=int(self._settings.worker_lease_seconds * 1000),
            keep_seconds=self._settings.session_keep_seconds,
        )
        return self._retry(lambda: self._scripts.run(call), "start")

    def emit(self, payload: str | list[str]) -> None:
        """Queue an event (a Responses renderer gives several at once)."""
        if isinstance(payload, str):
            self.events.append(payload)
        else:
            self.events.extend(payload)

    def add_token(self, token: int, choice: int = 0) -> None:
        self.tokens.append(stored_token(choice, token))

    def mark_written(self) -> None:
        """Everything held so far is known to be in Redis (a session taken over)."""
        self._written_events, self._written_tokens = len(self.events), len(self.tokens)

    @property
    def unwritten(self) -> bool:
        return self._written_events < len(self.events) or self._written_tokens < len(self.tokens)

    def append_call(self) -> Append:
        """The next write: what Redis does not hold yet (a bounded chunk of it)."""
        return Append(
            self.session_id,
            worker=self._worker,
            next_index=self._written_events,
            token_count=self._written_tokens,
            keep_seconds=self._settings.session_keep_seconds,
            events=tuple(self.events[self._written_events : self._written_events + WRITE_CHUNK]),
            tokens=tuple(self.tokens[self._written_tokens : self._written_tokens + WRITE_CHUNK]),
        )

    def take_reply(self, call: Append, reply: AppendReply) -> None:
        if reply.outcome in (Appended.OK, Appended.CANCEL):
            self._written_events = call.next_index + len(call.events)
            self._written_tokens = call.token_count + len(call.tokens)
            self.cancel_requested = self.cancel_requested or reply.outcome is Appended.CANCEL
        elif reply.outcome is Appended.BEHIND:
            log.warning(
                "session %s: Redis holds %d of %d events; writing the rest again",
                self.session_id,
                reply.event_count,
                self._written_events,
            )
            self._written_events, self._written_tokens = reply.event_count, reply.token_count
        else:
            self.lost = True

    def flush(self) -> None:
        """Write everything buffered; raises SessionLost if the session is no longer ours."""
        while True:
            flush_together(self._scripts, [self], self._settings.redis_outage_tolerance_seconds)
            if self.lost:
                raise SessionLost(self.session_id)
            if not self.unwritten:
                return

    def finish(
        self, status: str, finish_reason: str, usage: dict[str, object], final_events: list[str]
    ) -> bool:
        """End the session with its last events; false if it was no longer ours to end."""
        while True:
            self.flush()
            call = Finish(
                self.session_id,
                worker=self._worker,
                status=status,
                finish_reason=finish_reason,
                usage_json=dumps(usage),
                ttl=self._ttl,
                event_count=self._written_events,
                final_events=tuple(final_events),
            )
            result = self._retry(partial(self._scripts.run, call), "finish")
            if result is not Finished.BEHIND:
                return result is Finished.ENDED
            # Redis lost some of our writes since the last flush: write them again first.
            self._written_events = self._written_tokens = 0

    def fail(
        self,
        message: str,
        error_type: str = "server_error",
        code: str = "generation_failed",
        param: str | None = None,
    ) -> bool:
        """End the session with an error event, if this worker still runs it."""
        payload = dumps(error_object(message, error_type, code=code, param=param))
        call = Fail(
            self.session_id,
            message=message,
            ttl=self._ttl,
            error_event=payload,
            worker=self._worker,
        )
        return self._retry(lambda: self._scripts.run(call), "fail")

    def _retry(self, call: Callable[[], T], what: str) -> T:
        tolerance = self._settings.redis_outage_tolerance_seconds
        return retry_through_outage(call, tolerance, f"{what} {self.session_id}")


def flush_together(scripts: SyncScripts, writers: list[SessionWriter], tolerance_seconds: float) -> None:
    """Write several sessions' buffered events in one Redis round trip (one script run).

    Each writer then says whether a cancel was requested or the session was lost. Through
    a Redis outage the same writes are sent again until they land (a replay is recognised
    and ignored).
    """
    calls = [writer.append_call() for writer in writers]
    take_replies(writers, calls, write_together(scripts, calls, tolerance_seconds))


def write_together(scripts: SyncScripts, calls: list[Append], tolerance_seconds: float) -> list[AppendReply]:
    """Each write's reply; only this touches the network, so it may run in any thread.

    Redis forgets its scripts when it restarts: redis-py loads the script again when
    Redis answers NOSCRIPT, and the call, which did not run, goes again.
    """
    if not calls:
        return []
    many = AppendMany(tuple(calls))
    return retry_through_outage(lambda: scripts.run(many), tolerance_seconds, "event writes")


def take_replies(writers: list[SessionWriter], calls: list[Append], replies: list[AppendReply]) -> None:
    for writer, call, reply in zip(writers, calls, replies, strict=True):
        writer.take_reply(call, reply)

"""The RQ job function: runs one attempt at one session inside the worker process.

RQ calls ``run_generation`` by its import path (``shared.jobs.JOB_FUNCTION``) in one of the
worker's job threads. The model is loaded once at start by ``worker.__main__`` and
installed here, never per job; the thread prepares the prompt and then waits while the
engine decodes it together with the other jobs.

An attempt either starts a session or continues one whose earlier worker died or shut
down: it then replays the tokens already generated through a fresh output parser (which
rebuilds the events already written, exactly) and prefills prompt + those tokens, so the
next event is the one the earlier worker would have written.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
from rq import Queue, get_current_job

from shared import keys
from shared.events import SessionStatus, empty_usage
from shared.jobs import GenerationJob
from shared.queueing import QueueKind, enqueue_generation
from shared.redis_retry import retry_through_outage
from shared.responses import ResponseEvents
from shared.session_scripts import Requeue, Requeued, RequeueMode, Started, SyncScripts
from shared.settings import Settings
from worker import metrics
from worker.engine import HANDOVER, Engine, prefilled_in_pieces
from worker.errors import GenerationFailed, InvalidRequest
from worker.generation import build_sequences, continue_after
from worker.media.errors import MediaCancelled
from worker.media.loader import MediaLoader, never_cancelled
from worker.model import LoadedModel
from worker.presence import Presence
from worker.sequence import Sequence, combined
from worker.session_writer import SessionLost, SessionWriter

log = logging.getLogger(__name__)

# What a client reads when generation fails inside the worker; the details go to the log.
PUBLIC_FAILURE = "Generation failed because of an internal error."


@dataclass
class WorkerRuntime:
    settings: Settings
    loaded: LoadedModel
    connection: redis.Redis
    scripts: SyncScripts
    presence: Presence
    engine: Engine
    name: str
    media: MediaLoader
    queues: dict[QueueKind, Queue]
    # Set when the worker shuts down: jobs taken from now on are handed straight back.
    draining: threading.Event = field(default_factory=threading.Event)
    # Prompts are built one at a time: the processor's tokenizer is not thread-safe.
    prepare_lock: threading.Lock = field(default_factory=threading.Lock)


_runtime: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _runtime
    _runtime = runtime


def _job_id() -> str:
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_generation runs only as an RQ job")
    return str(job.id)


def run_generation(payload: dict[str, Any]) -> dict[str, Any]:
    if _runtime is None:
        raise RuntimeError("the worker runtime is not installed; start workers with `python -m worker`")
    runtime = _runtime
    job = GenerationJob.model_validate(payload)
    job_id = _job_id()
    if runtime.draining.is_set():
        # Taken while the worker shuts down: it is still queued, give it to another worker.
        return {"status": hand_over(runtime, job, payload, job_id)}
    writer = SessionWriter(runtime.scripts, runtime.settings, job, runtime.name)
    started = writer.start(job_id)
    if started.status != "running":
        # Cancelled or ended while queued, expired, or queued again under another job id.
        log.info("session %s not run by job %s: it is %s", job.session_id, job_id, started.status)
        return {"status": started.status}
    runtime.presence.hold(job.session_id)
    began = time.monotonic()
    result: dict[str, Any] = {"status": "failed"}
    try:
        result = _attempt(runtime, job, payload, job_id, writer, started)
        return result
    except SessionLost:
        log.warning("session %s is no longer this worker's; stopped", job.session_id)
        result = {"status": "lost"}
        return result
    except Exception as error:
        log.exception("generation failed for session %s", job.session_id)
        failure = error if isinstance(error, GenerationFailed) else GenerationFailed()
        writer.fail(PUBLIC_FAILURE, code=failure.code)
        raise
    finally:
        # Only now: until the session has ended or changed hands its lease must stay alive.
        runtime.presence.release(job.session_id)
        _log_job(runtime, job, job_id, result, began)


def _log_job(
    runtime: WorkerRuntime, job: GenerationJob, job_id: str, result: dict[str, Any], began: float
) -> None:
    """One line per job, and its outcome counted."""
    status = str(result.get("status", "failed")).split(":")[0]
    metrics.JOBS.labels(status).inc()
    usage = result.get("usage") or {}
    fields = {
        "session_id": job.session_id,
        "job_id": job_id,
        "worker": runtime.name,
        "status": status,
        "finish_reason": result.get("finish_reason"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "ttft_ms": result.get("ttft_ms"),
        "duration_ms": round((time.monotonic() - began) * 1000, 1),
    }
    log.info("job %s %s", job_id, status, extra=fields)


def _attempt(
    runtime: WorkerRuntime,
    job: GenerationJob,
    payload: dict[str, Any],
    job_id: str,
    writer: SessionWriter,
    started: Started,
) -> dict[str, Any]:
    began = time.monotonic()
    resumed = started.event_count > 0
    if resumed:
        log.info(
            "session %s: attempt %d continues after %d tokens",
            job.session_id,
            started.attempt,
            len(started.tokens),
        )
    try:
        group = _prepare(runtime, job, writer, resumed)
    except MediaCancelled:
        log.info("session %s cancelled while its media were fetched", job.session_id)
        return _end_cancelled(job, writer)
    if group is None:
        return {"status": "failed"}
    for sequence in group:
        writer.emit(sequence.chunks.role())
    if resumed:
        continue_after(group, started.tokens)
        if len(writer.events) != started.event_count:
            log.error(
                "session %s: replaying %d tokens gave %d events, the stream has %d",
                job.session_id,
                len(started.tokens),
                len(writer.events),
                started.event_count,
            )
            writer.fail("The session could not be continued after its worker stopped.", code="resume_failed")
            return {"status": "failed"}
        writer.mark_written()
    elif prefilled_in_pieces(group, runtime.engine.prefill_chunk_tokens):
        # Its first token may be seconds away (a video is read): the client's response
        # starts now. Any other prompt's role goes with its first token, in the step's
        # write (or the engine's check of waiting sequences, if it waits for room).
        writer.flush()
    running = [sequence for sequence in group if not sequence.finished]
    if running and not runtime.engine.run_group(running):
        if any(sequence.interrupted == HANDOVER for sequence in running):
            writer.flush()
            return {"status": hand_over(runtime, job, payload, job_id)}
        raise SessionLost(job.session_id)
    result = _finish(job, writer, group)
    first = min((s.first_token_at for s in group if s.first_token_at is not None), default=None)
    if first is not None and not resumed:
        result["ttft_ms"] = round((first - began) * 1000, 1)
    return result


def _prepare(
    runtime: WorkerRuntime, job: GenerationJob, writer: SessionWriter, resumed: bool
) -> list[Sequence] | None:
    """The sequences to decode (one per choice), or None when the request was refused."""
    # A continued session must rebuild its stream's events from the prompt before it can
    # end it, so only a fresh one stops fetching when it is cancelled.
    cancelled = never_cancelled if resumed else partial(_cancel_requested, runtime.connection, job.session_id)
    try:
        # Fetching and decoding run in this job's thread, alongside the engine's steps.
        media = runtime.media.load(job, cancelled)
        with runtime.prepare_lock:
            return build_sequences(runtime.loaded, job, writer, media)
    except InvalidRequest as error:
        log.info("session %s refused: %s", job.session_id, error)
        if resumed:
            # Accepted before: what changed is on our side (its inline media expired?).
            writer.fail("The session could not be continued after its worker stopped.", code="resume_failed")
        else:
            # The first event is an error: the gateway answers the request with a 400.
            writer.fail(str(error), "invalid_request_error", error.code, error.param)
        return None


def _cancel_requested(connection: redis.Redis, session_id: str) -> bool:
    try:
        return bool(connection.exists(keys.session_cancel(session_id)))
    except redis.RedisError:  # unknown for now: the fetch deadline still bounds the wait
        return False


def _end_cancelled(job: GenerationJob, writer: SessionWriter) -> dict[str, Any]:
    """End a session cancelled before its prompt was built: the events of one cancelled while
    queued (each choice's role and finish), written by the worker that runs it."""
    chunks, usage = writer.chunks, empty_usage()
    if isinstance(chunks, ResponseEvents):
        writer.emit(chunks.role())
        final_events = chunks.finish("cancelled", usage)
    else:
        roles, final_events = chunks.cancelled_before_start(job.n, job.include_usage)
        writer.emit(roles)
    writer.finish(SessionStatus.CANCELLED, "cancelled", usage, final_events)
    return {"status": SessionStatus.CANCELLED.value, "finish_reason": "cancelled", "usage": usage}


def _finish(job: GenerationJob, writer: SessionWriter, group: list[Sequence]) -> dict[str, Any]:
    outcomes = [sequence.outcome() for sequence in group]
    outcome = combined(outcomes)
    chunks = writer.chunks
    if isinstance(chunks, ResponseEvents):
        # The last event carries the whole response, usage included.
        final_events = chunks.finish(outcome.finish_reason, outcome.usage)
    else:
        final_events = [
            chunks.for_choice(s.index).finish(o.finish_reason) for s, o in zip(group, outcomes, strict=True)
        ]
        if job.include_usage:
            final_events.append(chunks.usage(outcome.usage))
    writer.finish(outcome.status, outcome.finish_reason, outcome.usage, final_events)
    return {"status": outcome.status.value, "finish_reason": outcome.finish_reason, "usage": outcome.usage}


def hand_over(runtime: WorkerRuntime, job: GenerationJob, payload: dict[str, Any], job_id: str) -> str:
    """Queue the session again for another worker (this one is shutting down)."""
    settings = runtime.settings
    new_job_id = uuid.uuid4().hex
    call = Requeue(
        job.session_id,
        expected_job_id=job_id,
        new_job_id=new_job_id,
        mode=RequeueMode.HANDOVER,
        worker=runtime.name,
        max_attempts=settings.max_job_attempts,
        ttl=settings.sessions_ttl_seconds,
        error_message="",
        error_event="",
    )
    tolerance = settings.redis_outage_tolerance_seconds
    result = retry_through_outage(lambda: runtime.scripts.run(call), tolerance, f"hand-over {job.session_id}")
    if result is Requeued.QUEUED:
        retry_through_outage(
            lambda: enqueue_generation(
                runtime.queues, settings, job.session_id, payload, new_job_id, again=True
            ),
            tolerance,
            f"enqueue {job.session_id}",
        )
        log.info("session %s handed over as job %s", job.session_id, new_job_id)
    return f"handed_over:{result.value}"

"""The RQ job function: runs one generation job inside the worker process.

RQ calls ``run_generation`` by its import path (``shared.jobs.JOB_FUNCTION``) in one of the
worker's job threads. The model is loaded once at start by ``worker.__main__`` and
installed here, never per job; the thread prepares the prompt and then waits while the
engine decodes it together with the other jobs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.events import SessionStatus
from shared.jobs import GenerationJob
from shared.settings import Settings
from worker.engine import Engine
from worker.errors import InvalidRequest
from worker.generation import build_sequence
from worker.media.loader import MediaLoader
from worker.model import LoadedModel
from worker.presence import Presence
from worker.session_writer import SessionScripts, SessionWriter

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    loaded: LoadedModel
    connection: redis.Redis
    scripts: SessionScripts
    presence: Presence
    engine: Engine
    name: str
    media: MediaLoader
    # Prompts are built one at a time: the processor's tokenizer is not thread-safe.
    prepare_lock: threading.Lock = field(default_factory=threading.Lock)


_runtime: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _runtime
    _runtime = runtime


def run_generation(payload: dict[str, Any]) -> dict[str, Any]:
    if _runtime is None:
        raise RuntimeError("the worker runtime is not installed; start workers with `python -m worker`")
    runtime = _runtime
    job = GenerationJob.model_validate(payload)
    writer = SessionWriter(runtime.connection, runtime.scripts, runtime.settings, job)
    status = writer.start(runtime.name)
    if status is not SessionStatus.RUNNING:
        # Cancelled (or otherwise ended, or expired) while queued: it must never run.
        log.info("session %s not run: it is %s", job.session_id, status or "gone")
        return {"status": status.value if status else "gone"}
    runtime.presence.hold(job.session_id)
    try:
        try:
            # Fetching and decoding run in this job's thread, alongside the engine's steps.
            media = runtime.media.load(job)
            with runtime.prepare_lock:
                sequence = build_sequence(runtime.loaded, job, writer, media)
        except InvalidRequest as error:
            # The first event is an error: the gateway answers the request with a 400.
            log.info("session %s refused: %s", job.session_id, error)
            writer.fail(str(error), "invalid_request_error", error.code, error.param)
            return {"status": SessionStatus.FAILED.value, "error": str(error)}
        writer.emit(writer.chunks.role())
        writer.flush()
        outcome = runtime.engine.run(sequence)
    except Exception as error:
        log.exception("generation failed for session %s", job.session_id)
        writer.fail(f"Generation failed: {type(error).__name__}: {error}")
        raise
    finally:
        runtime.presence.release(job.session_id)
    final_events = [writer.chunks.finish(outcome.finish_reason)]
    if job.include_usage:
        final_events.append(writer.chunks.usage(outcome.usage))
    writer.finish(outcome.status, outcome.finish_reason, outcome.usage, final_events)
    return {"status": outcome.status.value, "finish_reason": outcome.finish_reason, "usage": outcome.usage}

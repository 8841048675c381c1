"""Chat completion serving: open (or attach to) a session, then stream or collect it."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import anyio
from fastapi import Request

from api.completion import CompletionBuilder
from api.deps import Services
from api.errors import BadRequest, NotFound, NoWorker, QueueFull, from_error_event
from api.media_parts import MediaLimits
from api.metrics import RESUMES, StreamMeter, current_record
from api.protocol import (
    ChatCompletionRequest,
    check_max_tokens,
    check_n,
    to_messages,
    to_sampling,
    to_tools,
)
from api.relay import Event, follow
from api.session_store import SessionInfo
from shared import keys
from shared.events import dumps, format_event_id, parse_event_id
from shared.jobs import GenerationJob
from shared.redis_retry import OUTAGE_ERRORS
from shared.session_scripts import Created

log = logging.getLogger(__name__)

DONE_FRAME = b"data: [DONE]\n\n"
# How long a follower keeps a session marked as attached after its last renewal.
ATTACH_HOLD_SECONDS = 3.0


@dataclass(frozen=True)
class OpenedSession:
    session_id: str  # the client's id
    stored_id: str  # the id it is stored under (``keys.owned_session``)
    after: int  # replay the events after this index; -1 replays everything
    created: bool = False  # this request started the generation


def new_session_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18)


def resume_point(last_event_id: str | None, session_id: str | None) -> tuple[str | None, int]:
    """The session and index a Last-Event-ID asks to resume after (-1: from the start)."""
    if not last_event_id:
        return session_id, -1
    try:
        event_session, index = parse_event_id(last_event_id)
    except ValueError as error:
        raise BadRequest(str(error), param="Last-Event-ID", code="invalid_last_event_id") from error
    if session_id and event_session != session_id:
        raise BadRequest(
            f"Last-Event-ID names session '{event_session}' but the request names '{session_id}'.",
            param="Last-Event-ID",
            code="invalid_last_event_id",
        )
    return event_session, index


def owned(info: SessionInfo | None, session_id: str, owner: str) -> SessionInfo:
    """The session if the caller may see it; unknown and foreign sessions are both 404."""
    if info is None or info.owner != owner:
        raise NotFound(f"No session '{session_id}' (it may have expired).", param="session_id")
    return info


async def find_session(services: Services, session_id: str, owner: str) -> SessionInfo:
    """The caller's session by the client's id; its ``session_id`` is the stored id."""
    return owned(await services.store.get(keys.owned_session(owner, session_id)), session_id, owner)


async def open_session(
    services: Services,
    request: ChatCompletionRequest,
    owner: str,
    last_event_id: str | None,
    job_fields: dict[str, Any] | None = None,
) -> OpenedSession:
    """Attach to the request's session if it exists, otherwise start a generation.

    ``job_fields`` complete the job (a Responses API request sets its API and echo fields).
    """
    session_id, after = resume_point(last_event_id, request.session_id)
    # A known session is attached to; a resume of an unknown one is a 404 (expired).
    if session_id is not None:
        existing = await services.store.get(keys.owned_session(owner, session_id))
        if existing is not None or last_event_id:
            owned(existing, session_id, owner)
            if after >= 0:
                RESUMES.inc()
            return OpenedSession(session_id, keys.owned_session(owner, session_id), after)
    session_id = session_id or new_session_id()
    stored_id = keys.owned_session(owner, session_id)
    settings = services.settings
    job_id = uuid.uuid4().hex
    check_max_tokens(request, settings.max_tokens_cap)
    n = check_n(request, settings.max_n)
    messages, inline_media = to_messages(request, MediaLimits.from_settings(settings))
    tools, constraint = to_tools(request)
    sampling = to_sampling(request, settings)
    if sampling.seed is None:
        # Every attempt at the session draws the same tokens: a worker that takes over
        # after another died continues exactly where the stream stopped.
        sampling.seed = secrets.randbits(63)
    job = GenerationJob(
        session_id=stored_id,
        model=settings.model_name,
        created=int(time.time()),
        messages=messages,
        sampling=sampling,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        inline_media_key=keys.session_media(stored_id) if inline_media else None,
        tools=tools,
        constraint=constraint,
        n=n,
        **(job_fields or {}),
    )
    payload = job.model_dump(mode="json")
    # One round trip checks for a live worker and room in the queues, and creates the session.
    created = await services.store.create(
        stored_id, job_id, owner, job.model, job.created, dumps(payload), services.queue.capacity_check()
    )
    if created is Created.NO_WORKER:
        raise NoWorker(
            "No worker with the model loaded is available; try again shortly.", headers={"Retry-After": "5"}
        )
    if created is Created.QUEUE_FULL:
        raise QueueFull("The queue is full; try again shortly.", headers={"Retry-After": "1"})
    if created is Created.EXISTS:
        # A concurrent request with the same session id won: follow its generation.
        await find_session(services, session_id, owner)
        return OpenedSession(session_id, stored_id, after)
    try:
        await services.queue.enqueue(stored_id, payload, job_id, inline_media=inline_media)
    except OUTAGE_ERRORS as error:
        # Not lost: a session whose job never reached the queue is queued again by the
        # reaper from its stored payload once Redis answers; the client just waits.
        log.warning("session %s: job not queued yet (%s); the reaper will queue it", session_id, error)
    return OpenedSession(session_id, stored_id, after, created=True)


class Verdict(Enum):
    ACCEPTED = "accepted"  # the worker accepted the request: its stream has begun
    PENDING = "pending"  # no answer yet (the job waits in the queue): start the stream anyway
    CLIENT_LEFT = "client_left"


@dataclass
class Following:
    """A follower already reading a new session's stream, and the batch it read first.

    The stream's response goes on with it: following again would read the session's
    status and history once more and subscribe to the stream hub a second time.
    """

    batches: AsyncGenerator[list[Event]]
    first: list[Event]


@dataclass
class VerdictAnswer:
    verdict: Verdict
    following: Following | None = None


async def await_verdict(
    services: Services, stored_id: str, http_request: Request, wait_seconds: float
) -> VerdictAnswer:
    """Wait a short while for a new session's first event, the worker's verdict on the request.

    A request the worker refuses quickly (a prompt too long, an undecodable image) is
    answered with its HTTP error instead of a stream that starts and fails. A request that
    waits in the queue longer than ``wait_seconds`` gets its stream started instead, so
    that its client has the headers (``X-Session-Id``, to cancel it) and keep-alive
    comments while it waits; a later refusal then arrives as an error event. An accepted
    request's follower is handed on to its stream (``sse_events``).
    """
    batches = follow(services.redis, services.store, stored_id, -1, ATTACH_HOLD_SECONDS, fresh=True)
    try:
        with anyio.move_on_after(wait_seconds):
            async for batch in batches:
                if not batch:
                    if await http_request.is_disconnected():
                        await batches.aclose()
                        return VerdictAnswer(Verdict.CLIENT_LEFT)
                    continue
                event = batch[0]
                if event.end:
                    payload = json.loads(event.data)
                    if "error" in payload:
                        raise from_error_event(payload["error"])
                return VerdictAnswer(Verdict.ACCEPTED, Following(batches, batch))
            return VerdictAnswer(Verdict.ACCEPTED)
    except BaseException:
        await batches.aclose()
        raise
    # Timed out: the follower may have been interrupted in the middle of a read.
    await batches.aclose()
    return VerdictAnswer(Verdict.PENDING)


def render_sse(session_id: str, batch: list[Event]) -> bytes:
    """SSE frames for a batch of events, written to the client in one piece.

    Event data is single-line JSON, so each event is one ``id:`` and one ``data:`` line.
    """
    frames = (f"id: {format_event_id(session_id, e.index)}\ndata: {e.data}\n\n" for e in batch)
    return "".join(frames).encode()


async def sse_events(
    services: Services, session: OpenedSession, following: Following | None = None
) -> AsyncIterator[bytes]:
    """The session's SSE frames; with ``following``, from the follower the verdict used."""
    meter = StreamMeter(current_record(), new=session.created)
    if following is None:
        batches = follow(
            services.redis, services.store, session.stored_id, session.after, ATTACH_HOLD_SECONDS
        )
        pending: list[list[Event]] = []
    else:
        batches, pending = following.batches, [following.first]
    async with contextlib.aclosing(batches):
        for batch in pending:
            meter.passed([event.index for event in batch], batch[-1].end)
            yield render_sse(session.session_id, batch)
        async for batch in batches:
            if batch:
                meter.passed([event.index for event in batch], batch[-1].end)
                yield render_sse(session.session_id, batch)
    yield DONE_FRAME
    await _note_end(services, session.stored_id, meter)


async def _note_end(services: Services, stored_id: str, meter: StreamMeter) -> None:
    """The finish reason and usage, for the request's metrics and log line."""
    with contextlib.suppress(*OUTAGE_ERRORS):
        info = await services.store.get(stored_id)
        if info is not None:
            meter.finished(info.finish_reason, info.usage)


async def collect(
    services: Services, stored_id: str, http_request: Request, fresh: bool = False
) -> dict[str, Any] | None:
    """The whole completion, or None if the client left before it was done.

    ``fresh``: this request created the session (``follow``)."""
    builder = CompletionBuilder()
    meter = StreamMeter(current_record(), new=True)
    batches = follow(services.redis, services.store, stored_id, -1, ATTACH_HOLD_SECONDS, fresh)
    async for batch in batches:
        if not batch and await http_request.is_disconnected():
            return None
        meter.passed([event.index for event in batch], bool(batch) and batch[-1].end)
        for event in batch:
            builder.add(event.data)
    info = await services.store.get(stored_id)
    if info is not None:
        meter.finished(info.finish_reason, info.usage)
    model, created = (info.model, info.created) if info else (services.settings.model_name, 0)
    return builder.build(keys.client_session_id(stored_id), model, created, info.usage if info else None)

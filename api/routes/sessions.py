"""Session status, resumable stream over GET, and cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.cancellation import cancel_session
from api.deps import CallerDep, LastEventIdDep, ServicesDep
from api.held_stream import HeldEventSourceResponse
from api.metrics import CANCELS, RESUMES
from api.protocol import SESSION_ID_PATTERN
from api.serving import OpenedSession, find_session, resume_point, sse_events
from shared.events import SessionStatus

router = APIRouter()

SessionIdPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]


@router.get("/v1/sessions/{session_id}")
async def session_status(
    session_id: SessionIdPath, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    session = await find_session(services, session_id, caller)
    if session.status is not SessionStatus.QUEUED:
        return session.public()
    return session.public(await services.queue.position(session.job_id))


@router.get("/v1/sessions/{session_id}/stream")
async def session_stream(
    session_id: SessionIdPath,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: LastEventIdDep,
) -> HeldEventSourceResponse:
    _, after = resume_point(last_event_id, session_id)
    session = await find_session(services, session_id, caller)
    if after >= 0:
        RESUMES.inc()
    opened = OpenedSession(session_id, session.session_id, after)
    slot = services.admission.admit(caller)
    return HeldEventSourceResponse(slot, sse_events(services, opened), headers={"X-Session-Id": session_id})


@router.post("/v1/cancel/{session_id}")
async def cancel(session_id: SessionIdPath, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    session = await find_session(services, session_id, caller)
    CANCELS.labels("manual").inc()
    before = await cancel_session(services.store, services.queue, session.session_id)
    after = await find_session(services, session_id, caller)
    return {**after.public(), "cancel_requested": before in (SessionStatus.QUEUED, SessionStatus.RUNNING)}

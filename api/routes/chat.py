"""POST /v1/chat/completions."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import CallerDep, LastEventIdDep, ServicesDep
from api.held_stream import HeldEventSourceResponse
from api.protocol import ChatCompletionRequest
from api.serving import Verdict, await_verdict, collect, open_session, sse_events

router = APIRouter()

CLIENT_CLOSED_REQUEST = 499


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    http_request: Request,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: LastEventIdDep,
) -> Response:
    # Admitted before anything is queued: a refused stream leaves no job behind.
    slot = services.admission.admit(caller)
    with contextlib.ExitStack() as held:
        held.callback(slot.release)
        session = await open_session(services, body, caller, last_event_id)
        headers = {"X-Session-Id": session.session_id}
        if body.stream:
            if session.created:
                wait = services.settings.verdict_wait_seconds
                answer = await await_verdict(services, session.stored_id, http_request, wait)
                if answer.verdict is Verdict.CLIENT_LEFT:
                    return Response(status_code=CLIENT_CLOSED_REQUEST)
                following = answer.following
            else:
                following = None
            held.pop_all()  # the response gives the slot back when it is done
            return HeldEventSourceResponse(
                slot,
                sse_events(services, session, following),
                headers=headers,
                ping=services.settings.sse_ping_seconds,
            )
        completion = await collect(services, session.stored_id, http_request, session.created)
    if completion is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(completion, headers=headers)

"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from api.deps import CallerDep, LastEventIdDep, ServicesDep
from api.protocol import ChatCompletionRequest
from api.serving import await_verdict, collect, open_session, sse_events

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
    session = await open_session(services, body, caller, last_event_id)
    headers = {"X-Session-Id": session.session_id}
    if body.stream:
        if session.created and not await await_verdict(services, session.stored_id, http_request):
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return EventSourceResponse(sse_events(services, session), headers=headers)
    completion = await collect(services, session.stored_id, http_request)
    if completion is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(completion, headers=headers)

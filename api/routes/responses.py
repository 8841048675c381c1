"""POST /v1/responses and the stored responses: retrieve (and resume), cancel, delete, input items."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from api import responses_service as responses
from api.deps import CallerDep, LastEventIdDep, ServicesDep
from api.errors import BadRequest, NotFound, from_error_event
from api.held_stream import HeldEventSourceResponse
from api.metrics import CANCELS, RESUMES, StreamMeter, current_record
from api.protocol import SESSION_ID_PATTERN
from api.relay import follow
from api.responses_protocol import ResponsesRequest, input_items, renamed, to_chat_request
from api.serving import (
    ATTACH_HOLD_SECONDS,
    OpenedSession,
    Verdict,
    await_verdict,
    open_session,
    resume_point,
    sse_events,
)
from shared.responses import response_object

router = APIRouter()

CLIENT_CLOSED_REQUEST = 499
ResponseIdPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponsesRequest, http_request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    body.refuse_unsupported()
    settings = services.settings
    slot = services.admission.admit(caller)
    with contextlib.ExitStack() as held:
        held.callback(slot.release)
        history = (
            await responses.conversation(services, body.previous_response_id, caller)
            if body.previous_response_id
            else []
        )
        response_id = responses.new_response_id()
        chat, origins = to_chat_request(body, response_id, history)
        spec = body.spec(input_items(body))
        job_fields: dict[str, Any] = {"api": "responses", "response": spec}
        if body.store:
            job_fields["ttl_seconds"] = settings.responses_ttl_seconds
        try:
            session = await open_session(services, chat, caller, None, job_fields)
        except BadRequest as error:
            raise renamed(error, origins) from error
        if body.background:
            # A background response runs whether or not anyone follows it (OpenAI's semantics).
            await services.store.mark_background(session.stored_id)
        headers = {"X-Session-Id": response_id}
        if body.stream:
            try:
                answer = await await_verdict(
                    services, session.stored_id, http_request, settings.verdict_wait_seconds
                )
            except BadRequest as error:
                raise renamed(error, origins) from error
            if answer.verdict is Verdict.CLIENT_LEFT:
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            held.pop_all()  # the response gives the slot back when it is done
            return HeldEventSourceResponse(
                slot,
                sse_events(services, session, answer.following),
                headers=headers,
                ping=settings.sse_ping_seconds,
            )
        info = await responses.find_response(services, response_id, caller)
        if body.background:
            queued = response_object(response_id, info.model, info.created, spec, "queued")
            return JSONResponse(queued, headers=headers)
        try:
            result = await _await_end(services, session, http_request)
        except BadRequest as error:
            raise renamed(error, origins) from error
    if result is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(result, headers=headers)


async def _await_end(
    services: ServicesDep, session: OpenedSession, http_request: Request
) -> dict[str, Any] | None:
    """Follow a foreground response to its end; None if the client left first.

    A request the worker refused, or a generation that failed, is answered with its HTTP
    error, as chat completions are.
    """
    meter = StreamMeter(current_record(), new=True)
    batches = follow(
        services.redis, services.store, session.stored_id, -1, ATTACH_HOLD_SECONDS, session.created
    )
    async with contextlib.aclosing(batches):
        async for batch in batches:
            if not batch and await http_request.is_disconnected():
                return None
            meter.passed([event.index for event in batch], bool(batch) and batch[-1].end)
            for event in batch:
                if event.end and (payload := json.loads(event.data)).get("error"):
                    raise from_error_event(payload["error"])
    info = await services.store.get(session.stored_id)
    if info is None:
        raise NotFound(f"Response '{session.session_id}' has expired.", param="response_id")
    meter.finished(info.finish_reason, info.usage)
    return await responses.snapshot(services, info)


@router.get("/v1/responses/{response_id}", response_model=None)
async def retrieve_response(
    response_id: ResponseIdPath,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: LastEventIdDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> Response:
    info = await responses.find_response(services, response_id, caller)
    if not stream:
        return JSONResponse(await responses.snapshot(services, info))
    _, after = resume_point(last_event_id, response_id)
    if starting_after is not None:
        if last_event_id:
            raise BadRequest("Give either starting_after or Last-Event-ID, not both.", param="starting_after")
        after = starting_after
    if after >= 0:
        RESUMES.inc()
    slot = services.admission.admit(caller)
    opened = OpenedSession(response_id, info.session_id, after)
    return HeldEventSourceResponse(slot, sse_events(services, opened), headers={"X-Session-Id": response_id})


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(
    response_id: ResponseIdPath, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    info = await responses.find_response(services, response_id, caller)
    CANCELS.labels("manual").inc()
    return await responses.cancel(services, info)


@router.delete("/v1/responses/{response_id}")
async def delete_response(
    response_id: ResponseIdPath, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    info = await responses.find_response(services, response_id, caller)
    await responses.delete(services, info)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    response_id: ResponseIdPath,
    services: ServicesDep,
    caller: CallerDep,
    order: str = "desc",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    info = await responses.find_response(services, response_id, caller)
    items = responses.spec_of(await responses.job_of(services, info)).input_items
    listed = [{"id": _input_item_id(response_id, index), **item} for index, item in enumerate(items)]
    if order == "desc":
        listed.reverse()
    elif order != "asc":
        raise BadRequest("order must be 'asc' or 'desc'.", param="order")
    if after is not None:
        ids = [item["id"] for item in listed]
        if after not in ids:
            raise BadRequest(f"No input item '{after}' in this response.", param="after")
        listed = listed[ids.index(after) + 1 :]
    page = listed[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(listed) > limit,
    }


def _input_item_id(response_id: str, index: int) -> str:
    return f"msg_{response_id.removeprefix('resp_')[:24]}_{index}"

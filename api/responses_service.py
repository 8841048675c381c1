"""Responses over sessions: a response's snapshot, its conversation, its cancel and delete."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from api.cancellation import cancel_session
from api.deps import Services
from api.errors import BadRequest, NotFound
from api.response_snapshot import ResponseSnapshot
from api.session_store import SessionInfo
from shared import keys
from shared.events import DATA_FIELD, SessionStatus
from shared.jobs import ChatMessage, GenerationJob, TextPart
from shared.responses import RESPONSE_ID_PREFIX, ResponseSpec, response_object

# How long a cancel waits for a running response to reach its end before answering.
CANCEL_WAIT_SECONDS = 5.0
CANCEL_POLL_SECONDS = 0.05


def new_response_id() -> str:
    return RESPONSE_ID_PREFIX + secrets.token_hex(24)


async def find_response(
    services: Services, response_id: str, owner: str, param: str = "response_id"
) -> SessionInfo:
    """The caller's response; unknown, foreign, expired and chat sessions are all 404."""
    info = await services.store.get(keys.owned_session(owner, response_id))
    if info is None or info.owner != owner or not response_id.startswith(RESPONSE_ID_PREFIX):
        raise NotFound(f"No response with id '{response_id}' (it may have expired).", param=param)
    return info


async def job_of(services: Services, info: SessionInfo) -> GenerationJob:
    payload = await services.store.job_payload(info.session_id)
    if payload is None:
        raise NotFound(
            f"No response with id '{keys.client_session_id(info.session_id)}'.", param="response_id"
        )
    return GenerationJob.model_validate(payload)


def spec_of(job: GenerationJob) -> ResponseSpec:
    return job.response or ResponseSpec()


async def snapshot(services: Services, info: SessionInfo, job: GenerationJob | None = None) -> dict[str, Any]:
    """The response as it stands: queued, in progress with its output so far, or ended."""
    job = job or await job_of(services, info)
    response_id = keys.client_session_id(info.session_id)
    status = "queued" if info.status is SessionStatus.QUEUED else "in_progress"
    folder = ResponseSnapshot(response_object(response_id, info.model, info.created, spec_of(job), status))
    entries = await services.redis.xrange(keys.session_events(info.session_id))
    for _, fields in entries or ():
        folder.add(str((fields or {})[DATA_FIELD]))
    return folder.build()


def _history_message(message: ChatMessage) -> dict[str, Any]:
    """A stored chat message as request input again (inline media is no longer kept)."""
    content: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif part.url is not None:
            field = "image_url" if part.type == "image" else "video_url"
            content.append({"type": field, field: {"url": part.url}})
    turn: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        turn["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
        turn["content"] = content or None
    if message.tool_call_id is not None:
        turn["tool_call_id"] = message.tool_call_id
    return turn


def _output_message(response: dict[str, Any]) -> dict[str, Any] | None:
    """The assistant turn a response's output makes (its reasoning is not shown again)."""
    text = ""
    calls = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            text += "".join(part.get("text", "") for part in item.get("content") or ())
        elif item.get("type") == "function_call":
            function = {"name": item["name"], "arguments": item["arguments"]}
            calls.append({"id": item["call_id"], "type": "function", "function": function})
    if not text and not calls:
        return None
    turn: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        turn["tool_calls"] = calls
    return turn


async def conversation(services: Services, previous_id: str, owner: str) -> list[dict[str, Any]]:
    """The chat messages of a finished response and its answer: the next turn's history."""
    info = await find_response(services, previous_id, owner, param="previous_response_id")
    if info.status is None or not info.status.is_terminal:
        raise BadRequest(
            f"Response '{previous_id}' is still {info.status or 'unknown'}; "
            "continue from it once it has ended.",
            param="previous_response_id",
        )
    job = await job_of(services, info)
    messages = job.messages
    if spec_of(job).instructions is not None:
        messages = messages[1:]  # instructions apply to their own response only, as OpenAI's do
    history = [_history_message(message) for message in messages]
    answer = _output_message(await snapshot(services, info, job))
    return history + ([answer] if answer else [])


async def cancel(services: Services, info: SessionInfo) -> dict[str, Any]:
    """Cancel a queued or running response and wait (a little) for it to end; idempotent."""
    if info.status is not None and not info.status.is_terminal:
        await cancel_session(services.store, services.queue, info.session_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            current = await services.store.get(info.session_id)
            if current is None or (current.status is not None and current.status.is_terminal):
                info = current or info
                break
            await asyncio.sleep(CANCEL_POLL_SECONDS)
    return await snapshot(services, info)


async def delete(services: Services, info: SessionInfo) -> None:
    if info.status is not None and not info.status.is_terminal:
        await cancel_session(services.store, services.queue, info.session_id)
    await services.store.delete(info.session_id)

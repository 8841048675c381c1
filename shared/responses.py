"""The Responses API's objects and stream events, rendered from a session's output.

A response is a session like a chat completion's (same queue, workers and stream), whose
events are Responses stream events instead of ``chat.completion.chunk`` payloads. Each
event's ``sequence_number`` is its index in the session's stream, so resuming after
sequence number ``n`` (``starting_after=n``, or ``Last-Event-ID: <id>:<n>``) is the same
read from the same position as resuming a chat stream.

``ResponseEvents`` is the worker's renderer: it turns the deltas of one sequence (text,
reasoning, tool calls) into the typed events, opening and closing output items as the
output moves from the reasoning to the answer and to calls, and ends with the event that
carries the whole response. Like the chunk writer it replaces, it is a pure function of
what it is given, so a resumed session renders the same events again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from shared.events import dumps

RESPONSE_ID_PREFIX = "resp_"


class ResponseSpec(BaseModel):
    """What a response echoes of its request, and the input items it lists."""

    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    tools: list[dict[str, Any]] = Field(default_factory=list)  # in the Responses shape
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] | None = None
    previous_response_id: str | None = None
    background: bool = False
    store: bool = True
    input_items: list[dict[str, Any]] = Field(default_factory=list)


def item_id(kind: str, response_id: str, output_index: int) -> str:
    """An output item's id; the same every time the output is rendered."""
    digest = hashlib.blake2b(f"{response_id}:{output_index}".encode(), digest_size=12).hexdigest()
    return f"{kind}_{digest}"


def usage_object(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat-completion usage in the Responses shape."""
    if usage is None:
        return None
    details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": details.get("reasoning_tokens", 0)},
        "total_tokens": usage["total_tokens"],
    }


def response_object(
    response_id: str,
    model: str,
    created_at: int,
    spec: ResponseSpec,
    status: str,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": spec.background,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": spec.instructions,
        "max_output_tokens": spec.max_output_tokens,
        "metadata": spec.metadata,
        "model": model,
        "output": output or [],
        "parallel_tool_calls": spec.parallel_tool_calls,
        "previous_response_id": spec.previous_response_id,
        "reasoning": spec.reasoning,
        "store": spec.store,
        "temperature": spec.temperature,
        "text": spec.text,
        "tool_choice": spec.tool_choice,
        "tools": spec.tools,
        "top_p": spec.top_p,
        "truncation": "disabled",
        "usage": usage_object(usage),
    }


# finish_reason -> (terminal event, status, incomplete_details)
TERMINAL: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "stop": ("response.completed", "completed", None),
    "tool_calls": ("response.completed", "completed", None),
    "length": ("response.incomplete", "incomplete", {"reason": "max_output_tokens"}),
    # OpenAI has no stream event for a cancelled response: the last event is an
    # "incomplete" one whose response has the status "cancelled".
    "cancelled": ("response.incomplete", "cancelled", None),
}


def cancelled_response_events(
    response_id: str, model: str, created: int, spec: ResponseSpec
) -> tuple[str, str]:
    """The two events of a response cancelled before it started: created, then its end."""
    created_event = {
        "type": "response.created",
        "response": response_object(response_id, model, created, spec, "queued"),
        "sequence_number": 0,
    }
    end_event = {
        "type": "response.incomplete",
        "response": response_object(response_id, model, created, spec, "cancelled"),
        "sequence_number": 1,
    }
    return dumps(created_event), dumps(end_event)


class ResponseEvents:
    """Renders one response's stream events; ``next_index`` gives the next event's index."""

    def __init__(
        self, response_id: str, model: str, created: int, spec: ResponseSpec, next_index: Callable[[], int]
    ) -> None:
        self.response_id = response_id
        self._model = model
        self._created = created
        self._spec = spec
        self._next_index = next_index
        self.output: list[dict[str, Any]] = []  # finished items, in output order
        self._open: dict[str, Any] | None = None  # the item being written, if any

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        return response_object(self.response_id, self._model, self._created, self._spec, status, **fields)

    def _events(self, *payloads: dict[str, Any]) -> list[str]:
        first = self._next_index()
        return [dumps({**payload, "sequence_number": first + n}) for n, payload in enumerate(payloads)]

    # The chunk writer's interface, as a sequence calls it.

    def role(self) -> list[str]:
        """The worker accepted the request: the response exists and is in progress."""
        snapshot = self.response("in_progress")
        return self._events(
            {"type": "response.created", "response": snapshot},
            {"type": "response.in_progress", "response": snapshot},
        )

    def delta(self, content: str = "", reasoning: str = "", logprobs: object = None) -> list[str]:
        del logprobs  # not offered by this endpoint
        payloads: list[dict[str, Any]] = []
        if reasoning:
            payloads += self._ensure_open("reasoning")
            payloads.append(self._text_delta("response.reasoning_text.delta", reasoning))
        if content:
            payloads += self._ensure_open("message")
            payloads.append({**self._text_delta("response.output_text.delta", content), "logprobs": []})
        return self._events(*payloads)

    def tool_call_start(self, index: int, call_id: str, name: str) -> list[str]:
        del index
        payloads = self._close()
        output_index = len(self.output)
        self._open = {
            "id": item_id("fc", self.response_id, output_index),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        payloads.append(
            {"type": "response.output_item.added", "output_index": output_index, "item": dict(self._open)}
        )
        return self._events(*payloads)

    def tool_call_arguments(self, index: int, arguments: str) -> list[str]:
        del index
        assert self._open is not None and self._open["type"] == "function_call"
        self._open["arguments"] += arguments
        where = {"item_id": self._open["id"], "output_index": len(self.output)}
        payloads = [
            {"type": "response.function_call_arguments.delta", **where, "delta": arguments},
            {"type": "response.function_call_arguments.done", **where, "arguments": self._open["arguments"]},
            *self._close(),
        ]
        return self._events(*payloads)

    def finish(self, finish_reason: str, usage: dict[str, Any] | None = None) -> list[str]:
        """Close what is open, then the terminal event carrying the whole response."""
        payloads = self._close()
        event, status, incomplete = TERMINAL.get(finish_reason, TERMINAL["stop"])
        final = self.response(status, output=self.output, usage=usage, incomplete_details=incomplete)
        payloads.append({"type": event, "response": final})
        return self._events(*payloads)

    # Items.

    def _ensure_open(self, kind: str) -> list[dict[str, Any]]:
        if self._open is not None and self._open["type"] == kind:
            return []
        payloads = self._close()
        output_index = len(self.output)
        part: dict[str, Any]
        if kind == "reasoning":
            part = {"type": "reasoning_text", "text": ""}
            self._open = {
                "id": item_id("rs", self.response_id, output_index),
                "type": "reasoning",
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
        else:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self._open = {
                "id": item_id("msg", self.response_id, output_index),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
        where = {"item_id": self._open["id"], "output_index": output_index}
        payloads.append(
            {"type": "response.output_item.added", "output_index": output_index, "item": dict(self._open)}
        )
        payloads.append(
            {"type": "response.content_part.added", **where, "content_index": 0, "part": dict(part)}
        )
        self._open["content"] = [part]
        return payloads

    def _text_delta(self, event: str, text: str) -> dict[str, Any]:
        assert self._open is not None
        self._open["content"][0]["text"] += text
        return {
            "type": event,
            "item_id": self._open["id"],
            "output_index": len(self.output),
            "content_index": 0,
            "delta": text,
        }

    def _close(self) -> list[dict[str, Any]]:
        item, self._open = self._open, None
        if item is None:
            return []
        item["status"] = "completed"
        output_index = len(self.output)
        self.output.append(item)
        where = {"item_id": item["id"], "output_index": output_index}
        payloads: list[dict[str, Any]] = []
        if item["type"] == "reasoning":
            text = item["content"][0]["text"]
            payloads.append(
                {"type": "response.reasoning_text.done", **where, "content_index": 0, "text": text}
            )
            payloads.append(
                {
                    "type": "response.content_part.done",
                    **where,
                    "content_index": 0,
                    "part": item["content"][0],
                }
            )
        elif item["type"] == "message":
            part = item["content"][0]
            payloads.append(
                {
                    "type": "response.output_text.done",
                    **where,
                    "content_index": 0,
                    "text": part["text"],
                    "logprobs": [],
                }
            )
            payloads.append({"type": "response.content_part.done", **where, "content_index": 0, "part": part})
        payloads.append({"type": "response.output_item.done", "output_index": output_index, "item": item})
        return payloads

    def for_choice(self, index: int) -> ResponseEvents:
        """A response has one output: choice 0 is the response itself."""
        if index != 0:
            raise ValueError("a response has a single choice")
        return self

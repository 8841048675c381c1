"""Builds a non-streaming ``chat.completion`` from a session's events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from api.errors import APIError, from_error_event
from shared.events import SYSTEM_FINGERPRINT


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Choice:
    """One choice's text, reasoning, calls and log probabilities, as its chunks add up."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCall] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta", {})
        self.content.append(delta.get("content") or "")
        self.reasoning.append(delta.get("reasoning_content") or "")
        for call in delta.get("tool_calls") or ():
            known = self.calls.setdefault(call["index"], _ToolCall())
            known.id = call.get("id") or known.id
            function = call.get("function") or {}
            known.name = function.get("name") or known.name
            known.arguments.append(function.get("arguments") or "")
        if choice.get("logprobs"):
            self.logprobs = (self.logprobs or []) + (choice["logprobs"].get("content") or [])
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def build(self, index: int) -> dict[str, Any]:
        content = "".join(self.content)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for _, call in sorted(self.calls.items())
            ]
            message["content"] = content or None  # OpenAI's shape for an answer of calls only
        reasoning = "".join(self.reasoning)
        if reasoning:
            # Both names: SGLang and transformers clients read the first, vLLM's the second.
            message["reasoning_content"] = reasoning
            message["reasoning"] = reasoning
        logprobs = None if self.logprobs is None else {"content": self.logprobs, "refusal": None}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason}


class CompletionBuilder:
    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.error: APIError | None = None

    def add(self, data: str) -> None:
        payload = json.loads(data)
        if "error" in payload:
            self.error = from_error_event(payload["error"])
            return
        if payload.get("usage"):
            self.usage = payload["usage"]
        for choice in payload.get("choices", ()):
            self.choices.setdefault(choice.get("index", 0), _Choice()).add(choice)

    def build(
        self, session_id: str, model: str, created: int, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        choices = self.choices or {0: _Choice()}
        return {
            "id": session_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [choice.build(index) for index, choice in sorted(choices.items())],
            "usage": usage or self.usage,
        }

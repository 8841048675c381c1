"""Builds a non-streaming ``chat.completion`` from a session's events."""

from __future__ import annotations

import json
from typing import Any

from api.errors import APIError, from_error_event
from shared.events import SYSTEM_FINGERPRINT


class CompletionBuilder:
    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
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
            delta = choice.get("delta", {})
            self.content.append(delta.get("content") or "")
            self.reasoning.append(delta.get("reasoning_content") or "")
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def build(
        self, session_id: str, model: str, created: int, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content), "refusal": None}
        reasoning = "".join(self.reasoning)
        if reasoning:
            message["reasoning_content"] = reasoning
        return {
            "id": session_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            ],
            "usage": usage or self.usage,
        }

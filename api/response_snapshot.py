"""A response object from its session's events: the whole response, or where it has got to.

The last event carrying a ``response`` (created, in progress, or the terminal one) gives
the object; the item and delta events after it add the output written since. A session
that ended with an error event is a failed response carrying that error.
"""

from __future__ import annotations

import copy
import json
from typing import Any


class ResponseSnapshot:
    def __init__(self, skeleton: dict[str, Any]) -> None:
        # The response as the gateway created it, before any event (status "queued").
        self.response = copy.deepcopy(skeleton)
        self.output: list[dict[str, Any]] = []
        self.terminal = False

    def add(self, data: str) -> None:
        payload = json.loads(data)
        if "error" in payload:
            error = payload["error"]
            self.response["status"] = "failed"
            self.response["error"] = {
                "code": error.get("code") or "server_error",
                "message": error.get("message"),
            }
            self.terminal = True
            return
        kind = payload.get("type", "")
        if "response" in payload:
            self.response = payload["response"]
            self.output = list(self.response.get("output") or [])
            self.terminal = kind in ("response.completed", "response.incomplete", "response.failed")
        elif kind == "response.output_item.added":
            self.output.append(payload["item"])
        elif kind == "response.output_item.done":
            self.output[payload["output_index"]] = payload["item"]
        elif kind == "response.content_part.added":
            self.output[payload["output_index"]].setdefault("content", []).append(payload["part"])
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta"):
            part = self.output[payload["output_index"]]["content"][payload["content_index"]]
            part["text"] += payload["delta"]
        elif kind == "response.function_call_arguments.delta":
            self.output[payload["output_index"]]["arguments"] += payload["delta"]

    def build(self) -> dict[str, Any]:
        return {**self.response, "output": self.output}


def output_text(response: dict[str, Any]) -> str:
    """The answer's text: what the SDK's ``response.output_text`` joins."""
    return "".join(
        part.get("text", "")
        for item in response.get("output") or ()
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    )

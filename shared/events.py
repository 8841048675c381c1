"""The session event format: what a worker appends to a session's stream and a gateway relays.

Each stream entry is one Server-Sent Event. Its field ``d`` holds the event's ``data:``
payload, already rendered as OpenAI JSON, so that relaying and replaying cost no parsing.
The last entry of a session also carries ``e`` (end): after it the client gets ``[DONE]``.
Entry ids are ``0-(index+1)`` (Redis's ``0-*`` auto-sequence), so an event's index is its
id and resuming after index ``n`` is a plain ``XREAD`` from ``0-(n+1)``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

DATA_FIELD = "d"
END_FIELD = "e"
SYSTEM_FINGERPRINT = "qvl-transformers"


class SessionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (SessionStatus.FINISHED, SessionStatus.CANCELLED, SessionStatus.FAILED)


def index_of_entry(entry_id: str) -> int:
    """The event index of a stream entry id ``0-(index+1)``."""
    return int(entry_id.partition("-")[2]) - 1


def entry_id_after(index: int) -> str:
    """The XREAD start id that yields the events after ``index`` (``-1``: from the start)."""
    return f"0-{index + 1}"


def format_event_id(session_id: str, index: int) -> str:
    return f"{session_id}:{index}"


def parse_event_id(value: str) -> tuple[str, int]:
    """Split ``<session_id>:<index>``; raises ValueError when it is not of that form."""
    session_id, sep, index = value.rpartition(":")
    if not sep or not session_id or not index.isdigit():
        raise ValueError(f"not a '<session_id>:<index>' event id: {value!r}")
    return session_id, int(index)


# A session's stored token list interleaves its choices' tokens in the order they were
# generated (what a takeover replays): each entry is choice * CHOICE_STRIDE + token id.
CHOICE_STRIDE = 1 << 24


def stored_token(choice: int, token: int) -> int:
    return choice * CHOICE_STRIDE + token


def split_stored_token(value: int) -> tuple[int, int]:
    """(choice, token id) of a stored token entry."""
    return divmod(value, CHOICE_STRIDE)


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def error_object(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object, used for HTTP errors and for error events in a stream."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def empty_usage() -> dict[str, Any]:
    return usage_of(0, 0, 0)


def usage_of(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


class ChunkWriter:
    """Renders the ``chat.completion.chunk`` payloads of one session (one per choice index)."""

    def __init__(self, session_id: str, model: str, created: int, index: int = 0) -> None:
        self._head = {
            "id": session_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        self.index = index

    def for_choice(self, index: int) -> ChunkWriter:
        writer = ChunkWriter.__new__(ChunkWriter)
        writer._head, writer.index = self._head, index
        return writer

    def _chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> str:
        choice = {
            "index": self.index,
            "delta": delta,
            "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
            "finish_reason": finish_reason,
        }
        return dumps({**self._head, "choices": [choice]})

    def role(self) -> str:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(
        self, content: str = "", reasoning: str = "", logprobs: list[dict[str, Any]] | None = None
    ) -> str:
        delta: dict[str, str] = {}
        if reasoning:
            # Both names: SGLang and transformers clients read the first, vLLM's the second.
            delta["reasoning_content"] = reasoning
            delta["reasoning"] = reasoning
        if content or logprobs:
            delta["content"] = content
        return self._chunk(delta, logprobs=logprobs)

    def tool_call_start(self, index: int, call_id: str, name: str) -> str:
        """The first chunk of a streamed call: its index, id and name (OpenAI's order)."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._chunk({"tool_calls": [call]})

    def tool_call_arguments(self, index: int, arguments: str) -> str:
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    def finish(self, finish_reason: str) -> str:
        return self._chunk({}, finish_reason)

    def usage(self, usage: dict[str, Any]) -> str:
        return dumps({**self._head, "choices": [], "usage": usage})

    def cancelled_before_start(self, n: int, include_usage: bool) -> tuple[list[str], list[str]]:
        """The first and the last chunks of a session cancelled before any output: each of
        its n choices' role chunk, then their finish chunks (and the usage chunk, if asked)."""
        choices = [self.for_choice(index) for index in range(n)]
        finishes = [choice.finish("cancelled") for choice in choices]
        if include_usage:
            finishes.append(self.usage(empty_usage()))
        return [choice.role() for choice in choices], finishes

"""A raw Server-Sent Events reader, to check ids and framing byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SSEvent:
    id: str | None
    data: str

    @property
    def index(self) -> int:
        assert self.id is not None
        return int(self.id.rpartition(":")[2])

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def is_done(self) -> bool:
        return self.data == "[DONE]"


def iter_events(response: httpx.Response) -> Iterator[SSEvent]:
    event_id: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield SSEvent(event_id, "\n".join(data))
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
    if data:
        yield SSEvent(event_id, "\n".join(data))


def text_of(events: list[SSEvent]) -> str:
    """Reasoning and answer text of a list of chunk events, concatenated."""
    pieces = []
    for event in events:
        if event.is_done:
            continue
        for choice in event.json.get("choices", []):
            delta = choice.get("delta", {})
            pieces.append(delta.get("reasoning_content") or "")
            pieces.append(delta.get("content") or "")
    return "".join(pieces)

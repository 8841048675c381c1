"""Reads the payloads of a Server-Sent Events response as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """Yield each event's data (comments, ids and other fields are skipped)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


@dataclass(frozen=True)
class Frame:
    id: str | None
    data: str


class FrameParser:
    """Assembles ``id:`` and ``data:`` lines into frames, one line at a time.

    Unlike ``sse_data`` it keeps each event's id, and it only hands out an event once the
    blank line that ends it arrived: an event cut off by a dropped connection is not one
    the client got (as in the EventSource specification).
    """

    def __init__(self) -> None:
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> Frame | None:
        if not line:
            frame = Frame(self._id, "\n".join(self._data)) if self._data else None
            self._id, self._data = None, []
            return frame
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


async def sse_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Yield each complete event with its id."""
    parser = FrameParser()
    async for line in response.aiter_lines():
        if (frame := parser.feed(line)) is not None:
            yield frame


def http_client(connections: int, read_timeout: float) -> httpx.AsyncClient:
    """A client that opens as many connections as the load needs, without pool waits."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(read_timeout, connect=60.0, pool=None),
    )

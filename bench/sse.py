"""Reads the ``data:`` payloads of a Server-Sent Events response as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator

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


def http_client(connections: int, read_timeout: float) -> httpx.AsyncClient:
    """A client that opens as many connections as the load needs, without pool waits."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(read_timeout, connect=60.0, pool=None),
    )

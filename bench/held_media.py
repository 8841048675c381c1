"""Streaming requests with an image that never arrives, held open until let go.

Each names its own session, so that its status can be asked of the gateway while it waits.
Its stream stays open (the client never disconnects), so no reaper cancels the session.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.load import Target
from bench.workload import Workload


@dataclass
class HeldRequest:
    session_id: str
    status_code: int | None = None
    ended: bool = False  # its stream ended before it was let go
    error: str | None = None


def media_body(target: Target, workload: Workload, image_url: str, session_id: str) -> dict[str, Any]:
    image = {"type": "image_url", "image_url": {"url": image_url}}
    body = target.body(workload, workload.max_tokens)
    body["messages"] = [{"role": "user", "content": [image, {"type": "text", "text": workload.prompt}]}]
    body["session_id"] = session_id
    return body


async def hold(client: httpx.AsyncClient, target: Target, body: dict[str, Any], held: HeldRequest) -> None:
    """Follow the stream until it ends or the task is cancelled (which is let go, not an end)."""
    try:
        async with client.stream("POST", f"{target.base_url}/v1/chat/completions", json=body) as response:
            held.status_code = response.status_code
            async for _ in response.aiter_lines():
                pass
    except httpx.HTTPError as error:
        held.error = f"{type(error).__name__}: {error}"
    held.ended = True


class HeldMedia:
    """``count`` such requests, sent together and let go together."""

    def __init__(self, client: httpx.AsyncClient, target: Target, workload: Workload, count: int) -> None:
        self._client = client
        self._target = target
        self._workload = workload
        run = uuid.uuid4().hex[:8]
        self.requests = [HeldRequest(f"slow-media-{run}-{n}") for n in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    def send(self, image_url_of: Callable[[str], str]) -> None:
        """Send them all; ``image_url_of`` gives each session's image URL."""
        for held in self.requests:
            body = media_body(self._target, self._workload, image_url_of(held.session_id), held.session_id)
            self._tasks.append(asyncio.create_task(hold(self._client, self._target, body, held)))

    @property
    def open(self) -> int:
        return sum(1 for held in self.requests if not held.ended)

    def first_failure(self) -> str | None:
        for held in self.requests:
            if held.ended:
                return f"{held.session_id}: HTTP {held.status_code}, {held.error or 'its stream ended'}"
        return None

    async def statuses(self) -> dict[str, int]:
        """How many of the sessions the gateway reports in each status."""
        seen: Counter[str] = Counter()
        for held in self.requests:
            response = await self._client.get(f"{self._target.base_url}/v1/sessions/{held.session_id}")
            ok = response.status_code == 200
            seen[str(response.json()["status"]) if ok else f"HTTP {response.status_code}"] += 1
        return dict(seen)

    async def let_go(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

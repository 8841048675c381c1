"""An SSE response that holds a stream slot until it is done, however it ends."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from api.admission import StreamSlot


class HeldEventSourceResponse(EventSourceResponse):
    """Gives the slot back when the response ends: sent, failed, or cut off by the client.

    Releasing in the body generator would miss a response whose generator never started.
    """

    def __init__(self, slot: StreamSlot, content: AsyncIterable[Any], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()

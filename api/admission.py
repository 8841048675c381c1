"""How many streams one gateway follows at once: in all, and per API key.

Every request that follows a session holds a slot until it ends: an SSE stream, or a
non-streamed completion waiting for its result. A request beyond the gateway's limit gets
503 (another gateway replica may have room) and one beyond its key's limit 429; streams
already open are never affected. The counts are this process's own; without API keys
every caller is the same anonymous owner, to which the per-key limit does not apply.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from api.auth import ANONYMOUS
from api.errors import KeyStreamsFull, StreamsFull

GATEWAY_FULL_RETRY_AFTER_SECONDS = 5
KEY_FULL_RETRY_AFTER_SECONDS = 1


class StreamSlot:
    """A place among the streams; ``release`` (or leaving ``with``) gives it back, once."""

    def __init__(self, admission: StreamAdmission, owner: str) -> None:
        self._admission = admission
        self._owner = owner
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._give_back(self._owner)

    def __enter__(self) -> StreamSlot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


class StreamAdmission:
    def __init__(self, max_streams: int, max_streams_per_key: int) -> None:
        self._max_streams = max_streams
        self._max_per_key = max_streams_per_key  # 0: no per-key limit
        self._per_owner: Counter[str] = Counter()
        self.open = 0

    def admit(self, owner: str) -> StreamSlot:
        """A slot for a new stream of ``owner``, or StreamsFull / KeyStreamsFull."""
        if self.open >= self._max_streams:
            raise StreamsFull(
                f"This server is following its maximum of {self._max_streams} streams; try again shortly.",
                headers={"Retry-After": str(GATEWAY_FULL_RETRY_AFTER_SECONDS)},
            )
        if owner != ANONYMOUS and self._max_per_key and self._per_owner[owner] >= self._max_per_key:
            raise KeyStreamsFull(
                f"This API key has {self._max_per_key} streams open, its maximum; "
                "close one or try again shortly.",
                headers={"Retry-After": str(KEY_FULL_RETRY_AFTER_SECONDS)},
            )
        self.open += 1
        self._per_owner[owner] += 1
        return StreamSlot(self, owner)

    def _give_back(self, owner: str) -> None:
        self.open -= 1
        self._per_owner[owner] -= 1
        if self._per_owner[owner] <= 0:
            del self._per_owner[owner]

"""How many pixels decoding may produce: per request, and at once across a worker's jobs.

Both are counted from the headers (width x height, times the frames a video will give),
before any pixel is decoded, so a request of small files that declare large pictures is
refused for the cost of reading its headers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from worker.media.errors import MediaError


@dataclass(frozen=True)
class OverBudget:
    """Which item (by position) takes the request past its budget, as a MediaError."""

    position: int
    error: MediaError


def check_request_pixels(costs: Sequence[int], budget: int) -> OverBudget | None:
    total = 0
    for position, cost in enumerate(costs):
        total += cost
        if total > budget:
            return OverBudget(
                position,
                MediaError(
                    f"the request's images and videos decode to {sum(costs)} pixels (frames times "
                    f"pixels per frame), more than {budget} (MAX_REQUEST_MEDIA_PIXELS); this item "
                    f"alone is {cost}.",
                    "media_too_large",
                ),
            )
    return None


class ConcurrentPixels:
    """MAX_WORKER_MEDIA_PIXELS: pixels being decoded at once by one worker's job slots.

    A request waits until its pixels fit. Each decode ends within its deadline, so the
    wait is bounded; a request larger than the whole budget runs alone instead of never.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        with self._changed:
            return self._used

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._changed:
                self._used -= pixels
                self._changed.notify_all()

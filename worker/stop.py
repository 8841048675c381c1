"""Finds stop strings in text that arrives in pieces, without ever emitting part of one.

Generated text arrives one decoding step at a time and a stop string may be split over
several steps (and several tokens), so the tail of the text that could still be the start
of a stop string is held back, and released as soon as it cannot be. A match reports the
text before it, which is safe to emit, and the text after it, which the caller drops (stop
strings) or scans further (the reasoning splitter's ``<think>`` markers use this too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Scan:
    text: str  # safe to emit: no part of it can belong to a stop string
    stop: str | None = None  # the stop string found right after ``text``, if any
    rest: str = ""  # what followed the stop string in the scanned text, not scanned yet


class StopMatcher:
    def __init__(self, stops: Iterable[str]) -> None:
        # An empty string would match everywhere; callers refuse it, so it is never a stop.
        self.stops = tuple(dict.fromkeys(stop for stop in stops if stop))
        self._longest = max((len(stop) for stop in self.stops), default=0)
        self._held = ""

    def push(self, text: str) -> Scan:
        """Scan the next piece of text; after a match the matcher starts afresh."""
        if not self.stops:
            return Scan(text)
        buffer = self._held + text
        found = self._earliest_match(buffer)
        if found is not None:
            index, stop = found
            self._held = ""
            return Scan(buffer[:index], stop, buffer[index + len(stop) :])
        # The held part never holds a whole stop string, so a match can only start in the
        # tail that is still a prefix of one: everything before that tail is final.
        keep = self._partial_match_length(buffer)
        self._held = buffer[len(buffer) - keep :]
        return Scan(buffer[: len(buffer) - keep])

    def flush(self) -> str:
        """Release the held-back text: the output ended, so it will never complete a stop."""
        held, self._held = self._held, ""
        return held

    def _earliest_match(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self.stops:
            index = text.find(stop)
            if index < 0:
                continue
            if best is None or index < best[0] or (index == best[0] and len(stop) > len(best[1])):
                best = (index, stop)
        return best

    def _partial_match_length(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        for length in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-length:]
            if any(stop.startswith(tail) for stop in self.stops):
                return length
        return 0

"""Judges one session of the soak: what its client assembled against a final full replay.

The resume protocol promises that a client which resumes after the last event id it got
receives every later event exactly once, in order, and that a full replay afterwards
yields the very same list. Pure functions, so that the verdicts can be tested on their own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class SeenEvent:
    """One SSE event as a client got it: its index (from its id) and its data."""

    index: int
    data: str


@dataclass(frozen=True)
class Replay:
    """A full replay of a session; ``complete`` when it ended with ``[DONE]``."""

    events: tuple[SeenEvent, ...]
    complete: bool


class Outcome(StrEnum):
    FINISHED = "finished"  # the client got [DONE] after a normal end
    ERRORED = "errored"  # the client got an end event carrying an error
    HUNG = "hung"  # the client had no end by the deadline


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    error_code: str | None
    duplicated: tuple[int, ...]  # indices the client got more than once
    missing: tuple[int, ...]  # indices below the client's highest that it never got
    mismatch: str | None  # how the client's list differs from the replay, if it does

    @property
    def mismatched(self) -> bool:
        return self.mismatch is not None

    @property
    def clean(self) -> bool:
        """Finished, and exactly as the replay says."""
        intact = not (self.duplicated or self.missing or self.mismatched)
        return self.outcome is Outcome.FINISHED and intact


def error_of(data: str) -> dict[str, Any] | None:
    """The error object of an event's data, if it is an error event."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if error is None:
        return None
    return error if isinstance(error, dict) else {"message": str(error)}


def error_key(error: dict[str, Any]) -> str:
    """What the breakdown counts an error by: its code, else its type."""
    return str(error.get("code") or error.get("type") or "unknown")


def duplicated_indices(seen: Sequence[SeenEvent]) -> tuple[int, ...]:
    counts = Counter(event.index for event in seen)
    return tuple(sorted(index for index, count in counts.items() if count > 1))


def missing_indices(seen: Sequence[SeenEvent]) -> tuple[int, ...]:
    indices = {event.index for event in seen}
    if not indices:
        return ()
    return tuple(index for index in range(max(indices) + 1) if index not in indices)


def first_difference(seen: Sequence[SeenEvent], replay: Replay, client_done: bool) -> str | None:
    """Where the client's list departs from the replay.

    When both ended, the lists must be equal. When either did not (a hung client, or a
    replay cut short because the session is still running), the shorter must be a prefix of
    the longer: neither side can say what the other would have got later.
    """
    replayed = replay.events
    for position, (got, expected) in enumerate(zip(seen, replayed, strict=False)):
        if got.index != expected.index:
            return f"position {position}: client has index {got.index}, replay has {expected.index}"
        if got.data != expected.data:
            return f"index {got.index}: the client's data differs from the replay's"
    if len(seen) == len(replayed):
        return None
    if client_done and replay.complete:
        return f"client assembled {len(seen)} events, the replay has {len(replayed)}"
    if len(seen) > len(replayed) and replay.complete:
        return f"client has {len(seen) - len(replayed)} event(s) beyond the replay's end"
    if len(replayed) > len(seen) and client_done:
        return f"the replay has {len(replayed) - len(seen)} event(s) after the client's end"
    return None


def judge(seen: Sequence[SeenEvent], client_done: bool, replay: Replay) -> Verdict:
    """The verdict on one accepted session."""
    errors = [error for error in map(error_of, (event.data for event in seen)) if error is not None]
    if errors:
        outcome, code = Outcome.ERRORED, error_key(errors[-1])
    elif client_done:
        outcome, code = Outcome.FINISHED, None
    else:
        outcome, code = Outcome.HUNG, None
    return Verdict(
        outcome=outcome,
        error_code=code,
        duplicated=duplicated_indices(seen),
        missing=missing_indices(seen),
        mismatch=first_difference(seen, replay, client_done),
    )


@dataclass
class Tally:
    """The soak's counts over every session."""

    started: int = 0
    accepted: int = 0
    rejected: int = 0
    finished: int = 0
    errored: int = 0
    hung: int = 0
    lost: int = 0  # accepted, then a resume was told the session does not exist
    duplicated: int = 0
    missing: int = 0
    mismatched: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)
    rejections_by_code: Counter[str] = field(default_factory=Counter)

    def add_rejection(self, code: str) -> None:
        self.started += 1
        self.rejected += 1
        self.rejections_by_code[code] += 1

    def add_verdict(self, verdict: Verdict, lost: bool = False) -> None:
        self.started += 1
        self.accepted += 1
        if verdict.outcome is Outcome.FINISHED:
            self.finished += 1
        elif verdict.outcome is Outcome.ERRORED:
            self.errored += 1
            self.errors_by_code[verdict.error_code or "unknown"] += 1
        else:
            self.hung += 1
        self.lost += lost
        self.duplicated += bool(verdict.duplicated)
        self.missing += bool(verdict.missing)
        self.mismatched += verdict.mismatched

    @property
    def clean(self) -> bool:
        """Every accepted session finished, exactly as its replay says."""
        faults = (self.errored, self.hung, self.lost, self.duplicated, self.missing, self.mismatched)
        return not any(faults)


def tally(rejections: Iterable[str], verdicts: Iterable[tuple[Verdict, bool]]) -> Tally:
    result = Tally()
    for code in rejections:
        result.add_rejection(code)
    for verdict, lost in verdicts:
        result.add_verdict(verdict, lost)
    return result

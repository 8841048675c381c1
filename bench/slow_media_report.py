"""The figures of ``python -m bench slow-media``, as a text table and as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import LATENCY_HEADERS, Cell, table
from bench.results import LevelResult

# What a session whose media are still being fetched can be: waiting for a job slot, or in one.
PENDING_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class PendingCheck:
    """The requests with media, looked at as phase B starts and when its text load has ended."""

    sent: int
    media_slots: int  # the worker's job slots for requests with media
    # Connections to the silent listener when phase B started, in all at its end, and those
    # the fetchers still held then. A fetch that ended closes its connection.
    connections_at_start: int
    connections_accepted: int
    connections_open: int
    statuses: dict[str, int]  # session status -> sessions, at the end
    streams_open: int  # their streams, still open at the gateway at the end

    @property
    def in_slots(self) -> int:
        """Requests a media job slot holds; any others wait in the media queue."""
        return min(self.sent, self.media_slots)

    def problems(self) -> list[str]:
        """Why the media requests did not all stay pending throughout; empty when they did."""
        found: list[str] = []
        if not self.connections_at_start:
            found.append("no fetch had connected to the silent listener when phase B started")
        if self.connections_accepted != self.connections_at_start:
            found.append(
                f"the listener accepted {self.connections_accepted - self.connections_at_start} "
                "connections during phase B: some fetch ended and another took its place"
            )
        if self.connections_open != self.connections_accepted:
            found.append(f"{self.connections_accepted - self.connections_open} fetch connections were closed")
        pending = sum(count for status, count in self.statuses.items() if status in PENDING_STATUSES)
        if pending != self.sent or self.statuses.get("running", 0) != self.in_slots:
            found.append(f"sessions at the end: {_counts(self.statuses)}")
        if self.streams_open != self.sent:
            found.append(f"{self.streams_open} of {self.sent} streams were still open")
        return found


def _counts(statuses: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "none"


@dataclass(frozen=True)
class SlowMediaResult:
    settings: dict[str, Any]
    text_only: LevelResult  # phase A
    beside_media: LevelResult  # phase B
    pending: PendingCheck

    @property
    def tokens_per_s_ratio(self) -> float | None:
        """Phase B's text tokens/s over phase A's: 1 when the pending media cost text nothing."""
        return _ratio(self.beside_media.tokens_per_s, self.text_only.tokens_per_s)

    @property
    def ttft_p50_ratio(self) -> float | None:
        return _ratio(self.beside_media.ttft_ms.p50, self.text_only.ttft_ms.p50)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def render(result: SlowMediaResult) -> str:
    s = result.settings
    pending = result.pending
    title = (
        f"Text load beside requests whose media never arrive: {s['clients']} clients, "
        f"{s['max_tokens']}-token greedy streams, {s['duration_s']:g} s per phase; "
        f"1 worker, WORKER_MAX_BATCH={s['max_batch']}, media fetch deadline {s['media_deadline_s']:g} s; "
        f"{s['cpus']} CPUs"
    )
    headers = ["phase", "requests", "ok", "failed", *LATENCY_HEADERS, "tokens", "tok/s"]
    rows = [
        ["A: text only", *_cells(result.text_only)],
        [f"B: text + {pending.sent} pending media requests", *_cells(result.beside_media)],
    ]
    lines = [
        title,
        table(headers, rows),
        f"  B/A: tok/s {_text(result.tokens_per_s_ratio)}, TTFT p50 {_text(result.ttft_p50_ratio)}",
        f"  media requests at the end of B: sessions {_counts(pending.statuses)}; "
        f"{pending.connections_open} fetches connected to the silent listener "
        f"({pending.connections_accepted} accepted in all, {pending.connections_at_start} when B started); "
        f"{pending.streams_open} of {pending.sent} streams open",
    ]
    lines += [f"  NOT PENDING THROUGHOUT: {problem}" for problem in pending.problems()]
    for name, level in (("A", result.text_only), ("B", result.beside_media)):
        if level.first_error:
            lines.append(f"  {name}: first error: {level.first_error}")
    return "\n".join(lines) + "\n"


def _cells(level: LevelResult) -> list[Cell]:
    ttft, itl = level.ttft_ms, level.itl_ms
    latencies: list[Cell] = [ttft.p50, ttft.p95, itl.p50, itl.p95]
    return [level.requests, level.ok, level.failed, *latencies, level.output_tokens, level.tokens_per_s]


def _text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def write_json(result: SlowMediaResult, path: Path) -> None:
    document = {
        **dataclasses.asdict(result),
        "tokens_per_s_ratio": result.tokens_per_s_ratio,
        "ttft_p50_ratio": result.ttft_p50_ratio,
        "pending_throughout": not result.pending.problems(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")

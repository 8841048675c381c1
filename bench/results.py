"""The figures one run produces, as plain dataclasses (``dataclasses.asdict`` gives the JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.cpu_use import CpuUse
from bench.stats import Percentiles


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level against one server."""

    concurrency: int
    requests: int
    ok: int
    failed: int
    ttft_ms: Percentiles
    itl_ms: Percentiles
    output_tokens: int
    wall_s: float
    tokens_per_s: float
    prompt_tokens: int | None
    first_error: str | None
    # The cores during the level, by process (bench.cpu_use); empty where not watched.
    cores: dict[str, CpuUse] = field(default_factory=dict)


@dataclass
class ServerResult:
    name: str
    # Chunks a server sends before the first generated token (left out of TTFT and ITL).
    prefix_chunks: int
    levels: list[LevelResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def level(self, concurrency: int) -> LevelResult | None:
        return next((level for level in self.levels if level.concurrency == concurrency), None)


@dataclass(frozen=True)
class BaselineResult:
    """``generate()`` in one process, batch 1, no server."""

    runs: int
    prompt_tokens: int
    output_tokens: int
    tokens_per_s: float
    ttft_ms: Percentiles
    itl_ms: Percentiles
    versions: dict[str, str]


@dataclass(frozen=True)
class ReplayResult:
    """Replays of one finished session through the gateway."""

    events: int
    runs: int
    single_ms: Percentiles
    concurrent_clients: int
    concurrent_ms: Percentiles
    concurrent_events_per_s: float
    failures: int
    first_error: str | None
    # CPU time spent during the concurrent replays, to tell which side was the bottleneck.
    gateway_cpu_s: float | None
    client_cpu_s: float


@dataclass(frozen=True)
class LiveRelayResult:
    """Many clients following sessions while one writer appends to them."""

    clients: int
    sessions: int
    rate_per_session: float
    seconds: float
    written_events: int
    expected_events: int
    delivered_events: int
    offered_per_s: float
    delivered_per_s: float
    failures: int
    lag_ms: Percentiles
    first_error: str | None
    gateway_cpu_s: float | None
    client_cpu_s: float
    # Idle streams held open meanwhile, and how many of them broke.
    held_streams: int = 0
    held_failures: int = 0


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float | None


@dataclass(frozen=True)
class TargetCheck:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


@dataclass
class BenchResults:
    settings: dict[str, Any]
    baseline: BaselineResult | None = None
    servers: list[ServerResult] = field(default_factory=list)
    replay: ReplayResult | None = None
    live: LiveRelayResult | None = None
    ratios: list[Ratio] = field(default_factory=list)
    targets: list[TargetCheck] = field(default_factory=list)

    def server(self, name: str) -> ServerResult | None:
        return next((server for server in self.servers if server.name == name), None)

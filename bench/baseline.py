"""Runs the in-process baseline (bench.inprocess) in a child process and reads its figures."""

from __future__ import annotations

import logging
from typing import Any

from bench.child import run_child
from bench.results import BaselineResult
from bench.stack import Placement
from bench.stats import Percentiles
from bench.workload import Workload

log = logging.getLogger(__name__)


def run_baseline(placement: Placement, workload: Workload, runs: int) -> BaselineResult:
    log.info("in-process baseline: %d runs of generate()", runs)
    args = [
        f"--model={placement.model_dir}",
        f"--device={placement.device}",
        f"--dtype={placement.dtype}",
        f"--runs={runs}",
        f"--prompt={workload.prompt}",
        f"--max-tokens={workload.max_tokens}",
        f"--temperature={workload.temperature}",
        f"--top-p={workload.top_p}",
        f"--top-k={workload.top_k}",
        f"--length-forcing={workload.length_forcing}",
    ]
    return _parse(run_child("bench.inprocess", args, placement, "the in-process baseline"))


def _parse(raw: dict[str, Any]) -> BaselineResult:
    return BaselineResult(
        runs=raw["runs"],
        prompt_tokens=raw["prompt_tokens"],
        output_tokens=raw["output_tokens"],
        tokens_per_s=raw["tokens_per_s"],
        ttft_ms=Percentiles(**raw["ttft_ms"]),
        itl_ms=Percentiles(**raw["itl_ms"]),
        versions=raw["versions"],
    )

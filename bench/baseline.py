"""Runs the in-process baseline (bench.inprocess) in a child process and reads its figures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from bench.results import BaselineResult
from bench.stack import Placement
from bench.stats import Percentiles
from bench.workload import Workload
from tests.processes import ROOT

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 600


def run_baseline(placement: Placement, workload: Workload, runs: int) -> BaselineResult:
    log.info("in-process baseline: %d runs of generate()", runs)
    args = [
        sys.executable,
        "-m",
        "bench.inprocess",
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
    env = {**os.environ, **placement.env()}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"the in-process baseline failed:\n{done.stderr[-3000:]}")
    return _parse(done.stdout.strip().splitlines()[-1])


def _parse(line: str) -> BaselineResult:
    raw = json.loads(line)
    return BaselineResult(
        runs=raw["runs"],
        prompt_tokens=raw["prompt_tokens"],
        output_tokens=raw["output_tokens"],
        tokens_per_s=raw["tokens_per_s"],
        ttft_ms=Percentiles(**raw["ttft_ms"]),
        itl_ms=Percentiles(**raw["itl_ms"]),
        versions=raw["versions"],
    )

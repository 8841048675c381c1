"""``python -m bench real-size`` end to end on the tiny checkpoint: the GPU run's command works.

On a CPU it measures nothing the GPU targets are about; it runs here so that a run on a
GPU machine does not fail on something a CPU could have shown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.processes import ROOT
from worker import greedy_scan

VOCAB_OF_TINY = 151_936  # the real Qwen vocabulary


def test_the_real_size_command_reports_every_system_and_target_with_the_workers_account(
    tiny_model: str, tmp_path: Path
) -> None:
    figures = tmp_path / "figures.json"
    command = [sys.executable, "-m", "bench", "real-size", f"--model={tiny_model}", "--device=cpu"]
    command += ["--dtype=float32", "--levels=1,2", "--requests=2", "--max-tokens=4", "--baseline-runs=1"]
    command += ["--ttft-prompt=64", "--ttft-requests=1", "--variant=WORKER_CUDA_GRAPHS=true"]
    done = subprocess.run(
        [*command, f"--json={figures}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    assert "| generate() | 1 |" in report
    for level in (1, 2):
        assert f"| ours, WORKER_CUDA_GRAPHS=true | {level} |" in report
    assert "worker log: no CUDA device: fixed shapes without capture: 1" in report
    # The step's parts, timed without a server, at each level's batch size.
    assert "| 1 | " in report and "| 2 | " in report and "(eager, fixed shape)" in report
    for target in ("c1 / roofline", "c1 / generate()", "TTFT p50"):
        assert f"| WORKER_CUDA_GRAPHS=true | {target}" in report
    saved = json.loads(figures.read_text())
    assert saved["roofline"]["weight_bytes"] > 0 and saved["roofline"]["steps_per_s"] > 0
    variant = saved["variants"][0]
    assert [level["concurrency"] for level in variant["levels"]] == [1, 2]
    assert all(level["ok"] == level["requests"] and not level["failed"] for level in variant["levels"])
    assert variant["long_prompt"]["prompt_tokens"] >= 64
    parts = saved["step_parts"]
    assert [part["rows"] for part in parts] == [1, 2] and not any(part["captured"] for part in parts)
    assert all(0 < part["transformer_ms"] < part["step_ms"] * 2 for part in parts)
    # Where the CPU computes in bfloat16, the greedy scan's time stands beside the lm_head's.
    scans = greedy_scan.supported(torch.zeros(VOCAB_OF_TINY, 1))
    assert all((part["scan_ms"] is not None) == scans for part in parts)

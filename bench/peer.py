"""`transformers serve` on the same checkpoint, as the peer to compare with."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.load import Target
from bench.stack import Placement
from bench.workload import Workload
from tests.processes import Process, free_port

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 180
# What transformers logs when it serves a model without continuous batching after all.
NO_CB_MESSAGE = "does not support continuous batching"


def peer_name(continuous_batching: bool) -> str:
    return "transformers serve" + (" --cb" if continuous_batching else "")


def transformers_cli() -> str:
    beside_python = Path(sys.executable).with_name("transformers")
    found = str(beside_python) if beside_python.exists() else shutil.which("transformers")
    if found is None:
        raise RuntimeError("the `transformers` command is not installed (pip install transformers)")
    return found


class TransformersServe(Process):
    """The checkpoint is passed as the forced model: loaded at start, the only one served."""

    def __init__(self, placement: Placement, continuous_batching: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = str(placement.model_dir.resolve())
        self.continuous_batching = continuous_batching
        self._generation_defaults = _generation_defaults(placement.model_dir)
        args = [
            transformers_cli(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            placement.device,
            "--dtype",
            placement.dtype,
            "--log-level",
            "info",
            "--continuous-batching" if continuous_batching else "--no-continuous-batching",
            self.model,
        ]
        super().__init__(f"bench-transformers-serve-{self.port}", args, placement.env())
        self.wait_or_stop(self._healthy, STARTUP_TIMEOUT_SECONDS, f"transformers serve on {self.url}")

    def _healthy(self) -> bool:
        return self.answers_health(self.url, "transformers serve")

    def target(self) -> Target:
        return Target(peer_name(self.continuous_batching), self.url, self.model, self._extra_body)

    def _extra_body(self, workload: Workload, max_tokens: int) -> dict[str, Any]:
        # Its `generation_config` field replaces the checkpoint's whole generation config,
        # which is how it can be given top_k and an exact length.
        config = {
            **self._generation_defaults,
            "do_sample": workload.temperature > 0,
            **workload.sampling(),
            "max_new_tokens": max_tokens,
            **workload.exact_length(max_tokens),
        }
        return {"generation_config": json.dumps(config)}

    def notes(self) -> list[str]:
        if self.continuous_batching and NO_CB_MESSAGE in self.log_path.read_text(errors="replace"):
            return ["continuous batching is not available for this model: it generated sequentially"]
        return []


def _generation_defaults(model_dir: Path) -> dict[str, Any]:
    """The end and padding tokens of the checkpoint's own generation config."""
    config = json.loads((model_dir / "generation_config.json").read_text())
    return {name: config[name] for name in ("eos_token_id", "pad_token_id") if name in config}

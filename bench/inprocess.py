"""The in-process baseline: ``generate()`` on the checkpoint, batch 1, no server.

It builds the prompt and the sampling arguments with the worker's own functions, so it
asks the model for exactly what a request to the service asks, and forces the full
output length (see ``Workload.exact_length``). Runs in its own process so that it gets the same
thread settings as the servers' model processes::

    python -m bench.inprocess --model DIR --max-tokens 64 --runs 10

prints one JSON object (a BaselineResult).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from bench.results import BaselineResult
from bench.stats import Percentiles
from bench.workload import DEFAULT_PROMPT, LENGTH_FORCINGS, Workload
from shared.jobs import ChatMessage, TextPart
from shared.settings import Settings
from worker.model import LoadedModel, load_model
from worker.prompt import build_inputs

WARMUP_RUNS = 2


class TokenClock:
    """A ``generate()`` streamer that only notes when each new token comes out."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call hands over the prompt
            self._prompt_seen = True
            return
        now = time.perf_counter()
        self.times.extend([now] * value.numel())

    def end(self) -> None:
        pass


@dataclasses.dataclass
class Run:
    start: float
    end: float
    token_times: list[float]
    prompt_tokens: int


def generate_kwargs(loaded: LoadedModel, workload: Workload) -> dict[str, Any]:
    """The workload's sampling settings as ``generate()`` arguments, as the service applies them."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": workload.max_tokens,
        "pad_token_id": loaded.tokenizer.pad_token_id,
        "repetition_penalty": 1.0,
    }
    if workload.temperature > 0:
        top_k = workload.top_k if workload.top_k and workload.top_k > 0 else 0
        kwargs.update(do_sample=True, temperature=workload.temperature, top_p=workload.top_p, top_k=top_k)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    kwargs.update(workload.exact_length(workload.max_tokens))
    return kwargs


def generate_once(loaded: LoadedModel, workload: Workload) -> Run:
    start = time.perf_counter()
    messages = [ChatMessage(role="user", content=[TextPart(text=workload.prompt)])]
    inputs = build_inputs(loaded, messages)
    kwargs = generate_kwargs(loaded, workload)
    clock = TokenClock()
    with torch.inference_mode():
        loaded.model.generate(**inputs, **kwargs, streamer=clock)
    return Run(start, time.perf_counter(), clock.times, int(inputs["input_ids"].shape[1]))


def measure(loaded: LoadedModel, workload: Workload, runs: int) -> BaselineResult:
    for _ in range(WARMUP_RUNS):
        generate_once(loaded, workload)
    measured = [generate_once(loaded, workload) for _ in range(runs)]
    tokens = sum(len(run.token_times) for run in measured)
    elapsed = sum(run.end - run.start for run in measured)
    itls = [b - a for run in measured for a, b in itertools.pairwise(run.token_times)]
    return BaselineResult(
        runs=runs,
        prompt_tokens=measured[0].prompt_tokens,
        output_tokens=tokens,
        tokens_per_s=tokens / elapsed,
        ttft_ms=Percentiles.of_seconds([run.token_times[0] - run.start for run in measured]),
        itl_ms=Percentiles.of_seconds(itls),
        versions={name: version(name) for name in ("torch", "transformers")},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--length-forcing", choices=LENGTH_FORCINGS, default="eos-off")
    args = parser.parse_args(argv)
    settings = Settings(model_repo_id=str(args.model), device_map=args.device, torch_dtype=args.dtype)
    workload = Workload(
        args.prompt, args.max_tokens, args.temperature, args.top_p, args.top_k, args.length_forcing
    )
    result = measure(load_model(settings), workload, args.runs)
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main()

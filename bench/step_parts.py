"""A decoding step's parts, timed without a server: where a step's time goes at each batch size.

The worker's own pieces, driven directly: a text prompt prefilled once and copied into
``rows`` slots of a batch at fixed shapes (``worker.batch``), then decoding steps as the
engine runs them, each part timed apart (the device synchronised around it):

- the transformer step: on a GPU the replay of the step's CUDA graph
  (``worker.step_graphs``), on a CPU the same step run eagerly at its fixed shape;
- the lm_head over the batch's rows (``worker.logits_head``);
- the greedy pick and its read back to the host (the engine's one sync a step);
- on a CPU that computes in bfloat16, the greedy scan that replaces the lm_head and the
  pick for greedy rows (``worker.greedy_scan``);
- the whole step with no sync between its parts, as the engine runs it (with the scan,
  where there is one).

The first step of each size captures its graph; it is left out. Against the roofline
(``bench.roofline``), the transformer step's time says how far the kernels are from the
weights' read time, and the rest what the parts around them cost. Runs in its own process,
on the device of the run::

    python -m bench.step_parts --model DIR --device cuda --dtype bfloat16 --rows 1,16,64

prints one JSON object ({"parts": [StepParts, ...]}).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from bench.roofline import synchronize
from bench.workload import DEFAULT_PROMPT
from shared.settings import Settings
from worker.batch import SlotBatch
from worker.logits_head import LogitsHead
from worker.model import LoadedModel, load_model
from worker.sampler import best_tokens
from worker.step_graphs import StepGraphs, bucketed_shape

WARMUP_STEPS = 3  # the first captures the graph of its shape

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class StepParts:
    """Milliseconds per step (medians) of each part, at one batch size."""

    rows: int
    captured: bool  # the transformer step replayed a CUDA graph
    transformer_ms: float
    lm_head_ms: float
    pick_ms: float  # the greedy pick and its read back to the host
    step_ms: float  # all of it, synchronised once, as the engine does
    # Greedy tokens straight from the hidden states by the bfloat16 scan (worker.greedy_scan),
    # in place of the lm_head and the pick, where the head has one (a CPU); None elsewhere.
    scan_ms: float | None = None


def _timed(device: torch.device, part: Callable[[], T]) -> tuple[float, T]:
    """Milliseconds the part took on the device, and what it returned."""
    synchronize(device)
    began = time.perf_counter()
    result = part()
    synchronize(device)
    return (time.perf_counter() - began) * 1000, result


def _pick(logits: torch.Tensor) -> list[int]:
    """The engine's greedy pick: its blocked argmax (a plain ``argmax`` is several times
    slower on a CPU, and made the pick look like a quarter to a third of a step)."""
    picked: list[int] = best_tokens(logits).tolist()
    return picked


def _scan(head: LogitsHead, hidden: torch.Tensor) -> list[int]:
    """The engine's pick where every row is plain greedy: the scan where the head has one
    (no float32 logits), else the lm_head and the greedy pick."""
    picked: list[int] = head.greedy_tokens(hidden).tolist()
    return picked


def measure_rows(loaded: LoadedModel, rows: int, steps: int) -> StepParts:
    device, model = loaded.device, loaded.model
    head = LogitsHead(model)
    ids = loaded.tokenizer(DEFAULT_PROMPT, return_tensors="pt").input_ids.to(device)
    length = int(ids.shape[1])
    positions = torch.arange(length, device=device).view(1, 1, -1).expand(3, 1, -1)
    _, cache = head.hidden(input_ids=ids, position_ids=positions, use_cache=True)
    batch = SlotBatch(bucketed_shape, keep_buffers=True)
    batch.add(cache, length, device, copies=rows)

    assert batch.cache is not None
    graphs = StepGraphs(partial(head.step, batch.cache), device)
    token = int(ids[0, -1])
    times: dict[str, list[float]] = {"transformer": [], "lm_head": [], "pick": [], "scan": [], "step": []}
    for step in range(WARMUP_STEPS + 2 * steps):
        mask = batch.prepare_step()
        input_ids = torch.full((mask.shape[0], 1), token, device=device)
        position = torch.full((mask.shape[0],), length + step, device=device)
        if step < WARMUP_STEPS + steps:  # the parts, one at a time
            transformer, hidden = _timed(device, partial(graphs.run, batch, input_ids, position))
            lm_head, logits = _timed(device, partial(head.project, hidden[:rows]))
            pick, _ = _timed(device, partial(_pick, logits))
            if step >= WARMUP_STEPS:
                times["transformer"].append(transformer)
                times["lm_head"].append(lm_head)
                times["pick"].append(pick)
                if head.scans:
                    times["scan"].append(_timed(device, partial(_scan, head, hidden[:rows]))[0])
        else:  # the whole step, one sync at its end as in the engine
            began = time.perf_counter()
            _scan(head, graphs.run(batch, input_ids, position)[:rows])
            times["step"].append((time.perf_counter() - began) * 1000)
        batch.advance()
    medians = {part: statistics.median(values) for part, values in times.items() if values}
    return StepParts(
        rows=rows,
        captured=graphs.capturing,
        transformer_ms=medians["transformer"],
        lm_head_ms=medians["lm_head"],
        pick_ms=medians["pick"],
        step_ms=medians["step"],
        scan_ms=medians.get("scan"),
    )


def measure(settings: Settings, rows: list[int], steps: int) -> list[StepParts]:
    loaded = load_model(settings)
    with torch.inference_mode():
        return [measure_rows(loaded, count, steps) for count in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", default="1,16,64", help="comma-separated batch sizes (default 1,16,64)")
    parser.add_argument("--steps", type=int, default=30, help="steps timed per way (default 30)")
    args = parser.parse_args(argv)
    settings = Settings(model_repo_id=str(args.model), device_map=args.device, torch_dtype=args.dtype)
    parts = measure(settings, [int(rows) for rows in args.rows.split(",")], args.steps)
    print(json.dumps({"parts": [dataclasses.asdict(part) for part in parts]}))


if __name__ == "__main__":
    main()

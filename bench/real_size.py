"""``python -m bench real-size``: the real model's size (random weights) beside generate() and the roofline.

Meant for a GPU: it builds (once) a checkpoint with Qwen3-VL-2B's configuration and random
weights (``python -m worker.tiny_checkpoint --size real``), measures the roofline of a
decoding step there (``bench/roofline.py``), runs ``generate()`` in-process at batch 1,
then our stack once per worker variant (eager, or with the settings given): greedy
streams of ``--max-tokens`` tokens at each level, and the time to first token of a
``--ttft-prompt``-token text prompt alone. Prints everything side by side with the targets.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.baseline import run_baseline
from bench.child import run_child
from bench.load import Target, measure_server
from bench.long_context import prompt_of
from bench.results import BaselineResult, LevelResult
from bench.roofline import Roofline
from bench.stack import Placement, our_stack, ours_full_length_body
from bench.step_parts import StepParts
from bench.workload import Workload
from tests.processes import LOG_DIR, ROOT

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = ROOT / ".cache" / "qwen3-vl-2b-random"
ROOFLINE_SHARE_TARGET = 0.35  # c1 tok/s over the roofline's steps/s
SCALING_TARGET = 20.0  # c64 tok/s over c1 tok/s
TTFT_TARGET_MS = 50.0  # of a 1k-token text prompt
TIMEOUT_SECONDS = 1800
# Lines of the worker's log that say what became of a variant's graphs or compilation.
WORKER_LOG_SIGNS = {
    "decoding step captured as a CUDA graph": "CUDA graphs captured",
    "capturing a decoding step as a CUDA graph failed": "CUDA graph captures that failed (eager after)",
    "CUDA graphs need a CUDA device": "no CUDA device: fixed shapes without capture",
    "running eagerly from now on": "compiled forwards that failed (eager after)",
    # Inductor's cudagraphs log (TORCH_LOGS=cudagraphs): reduce-overhead ran a graph without
    # CUDA graphs, e.g. for inputs it writes in place (the batch's key/value buffers).
    "skipping cudagraphs": "compiled graphs run without CUDA graphs (inductor skipped them)",
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A worker configuration: its name and the environment settings that make it."""

    name: str
    settings: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        if text == "eager":  # on a GPU the worker's default replays CUDA graphs
            return cls("eager", {"WORKER_CUDA_GRAPHS": "false"})
        if text == "default":
            return cls("default", {})
        settings = {}
        for pair in text.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.startswith("WORKER_"):
                raise argparse.ArgumentTypeError(f"{pair!r}: expected WORKER_NAME=value")
            settings[key] = value
        return cls(text, settings)


@dataclasses.dataclass
class VariantResult:
    variant: Variant
    levels: list[LevelResult]
    long_prompt: LevelResult
    # What the worker's log says of its graphs or compilation: sign -> lines.
    worker_log: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RealSizeResult:
    settings: dict[str, Any]
    roofline: Roofline
    baseline: BaselineResult | None
    # A decoding step's parts at each level's batch size, without a server (bench.step_parts).
    step_parts: list[StepParts] = dataclasses.field(default_factory=list)
    variants: list[VariantResult] = dataclasses.field(default_factory=list)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench real-size", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--model", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint directory, built if absent")
    add("--device", default="cuda")
    add("--dtype", default="bfloat16")
    add("--threads", type=int, default=1, help="OMP threads of every model process (default 1)")
    add("--levels", default="1,16,64", help="comma-separated concurrency levels (default 1,16,64)")
    add("--requests", type=int, default=16, help="requests per level, at least c (default 16)")
    add("--max-tokens", type=int, default=64, help="output tokens per request (default 64)")
    add("--baseline-runs", type=int, default=3, help="generate() runs, 0 to leave it out (default 3)")
    add("--part-steps", type=int, default=30, help="steps timed per part, 0 to leave them out (default 30)")
    add("--ttft-prompt", type=int, default=1000, help="prompt tokens of the TTFT requests (default 1000)")
    add("--ttft-requests", type=int, default=8, help="TTFT requests, one at a time (default 8)")
    add(
        "--variant",
        type=Variant.parse,
        action="append",
        help="a worker configuration: eager, default (the worker's own: CUDA graphs on a GPU), or "
        "WORKER_NAME=value[,...] (repeatable; default: eager and default)",
    )
    add("--json", type=Path, metavar="PATH", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    args.levels = [int(level) for level in args.levels.split(",")]
    args.variant = args.variant or [Variant.parse("eager"), Variant.parse("default")]
    return args


def ensure_checkpoint(model_dir: Path, device: str, dtype: str) -> None:
    if (model_dir / "config.json").exists():
        return
    log.info("building a checkpoint of the real size with random weights in %s", model_dir)
    command = [sys.executable, "-m", "worker.tiny_checkpoint", "--size", "real"]
    command += ["--dtype", dtype, "--device", device, str(model_dir)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=TIMEOUT_SECONDS)


def measure_roofline(placement: Placement) -> Roofline:
    args = [f"--model={placement.model_dir}", f"--device={placement.device}", f"--dtype={placement.dtype}"]
    return Roofline(**run_child("bench.roofline", args, placement, "the roofline measurement"))


def measure_step_parts(placement: Placement, levels: list[int], steps: int) -> list[StepParts]:
    args = [f"--model={placement.model_dir}", f"--device={placement.device}", f"--dtype={placement.dtype}"]
    args += [f"--rows={','.join(map(str, levels))}", f"--steps={steps}"]
    raw = run_child("bench.step_parts", args, placement, "the step's parts")
    return [StepParts(**part) for part in raw["parts"]]


def measure_variant(placement: Placement, variant: Variant, args: argparse.Namespace) -> VariantResult:
    log.info("our stack, %s", variant.name)
    decode = Workload(max_tokens=args.max_tokens, temperature=0.0)
    long_prompt = Workload(prompt_of(args.ttft_prompt), max_tokens=4, temperature=0.0)
    # A compiled worker logs why inductor ran a graph without CUDA graphs, if it did.
    hints = {"TORCH_LOGS": "cudagraphs"} if "WORKER_COMPILE" in variant.settings else {}
    with our_stack(placement, max_batch=max(args.levels), **variant.settings, **hints) as stack:
        target = Target(variant.name, stack.gateway.url, "bench", ours_full_length_body)
        levels = asyncio.run(measure_server(target, decode, args.levels, args.requests)).levels
        alone = asyncio.run(measure_server(target, long_prompt, [1], args.ttft_requests)).levels[0]
        log_text = stack.worker.log_path.read_text(errors="replace")
    signs = {what: log_text.count(line) for line, what in WORKER_LOG_SIGNS.items() if line in log_text}
    return VariantResult(variant, levels, alone, signs)


def run_real_size(argv: list[str]) -> int:
    args = parse_args(argv)
    placement = Placement(args.model, args.device, args.dtype, args.threads)
    ensure_checkpoint(args.model, args.device, args.dtype)
    result = RealSizeResult(
        settings={
            "model": str(args.model),
            "device": args.device,
            "dtype": args.dtype,
            "levels": args.levels,
            "requests_per_level": args.requests,
            "max_tokens": args.max_tokens,
            "ttft_prompt_tokens": args.ttft_prompt,
        },
        roofline=measure_roofline(placement),
        baseline=None,
    )
    if args.part_steps:
        result.step_parts = measure_step_parts(placement, args.levels, args.part_steps)
    if args.baseline_runs:
        greedy = Workload(max_tokens=args.max_tokens, temperature=0.0)
        result.baseline = run_baseline(placement, greedy, args.baseline_runs)
    for variant in args.variant:
        result.variants.append(measure_variant(placement, variant, args))
    print(render(result), end="")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def render(result: RealSizeResult) -> str:
    roofline, settings = result.roofline, result.settings
    lines = [
        f"# Real-size decode: {roofline.device_name}, {settings['device']}, {settings['dtype']}; "
        f"greedy, {settings['max_tokens']} output tokens\n",
        f"weights read per step: {roofline.weight_bytes / 1e9:.2f} GB; copy bandwidth "
        f"{roofline.bandwidth_bytes_per_s / 1e9:.0f} GB/s; roofline {roofline.steps_per_s:.0f} steps/s\n",
        "| system | c | tok/s | tok/s per stream | of roofline | TTFT p50 ms | ITL p50 ms | ITL p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if baseline := result.baseline:
        lines.append(
            f"| generate() | 1 | {baseline.tokens_per_s:.1f} | {baseline.tokens_per_s:.1f} | "
            f"{baseline.tokens_per_s / roofline.steps_per_s:.2f} | {_ms(baseline.ttft_ms.p50)} | "
            f"{_ms(baseline.itl_ms.p50)} | {_ms(baseline.itl_ms.p95)} |"
        )
    for variant in result.variants:
        for level in variant.levels:
            per_stream = level.tokens_per_s / level.concurrency
            lines.append(
                f"| ours, {variant.variant.name} | {level.concurrency} | {level.tokens_per_s:.1f} | "
                f"{per_stream:.1f} | {per_stream / roofline.steps_per_s:.2f} | {_ms(level.ttft_ms.p50)} | "
                f"{_ms(level.itl_ms.p50)} | {_ms(level.itl_ms.p95)} |"
            )
    if result.step_parts:
        lines += ["", *_step_parts(result.step_parts, roofline)]
    notes = [
        f"- {variant.variant.name}, worker log: {what}: {count}"
        for variant in result.variants
        for what, count in variant.worker_log.items()
    ]
    lines += ["", *notes] if notes else []
    lines += ["", "| variant | target | value | goal | |", "| --- | --- | --- | --- | --- |"]
    for variant in result.variants:
        lines += _targets(variant, roofline, result.baseline)
    return "\n".join(lines) + "\n"


def _targets(variant: VariantResult, roofline: Roofline, baseline: BaselineResult | None) -> list[str]:
    name, rows = variant.variant.name, []
    by_level = {level.concurrency: level for level in variant.levels}
    if one := by_level.get(1):
        share = one.tokens_per_s / roofline.steps_per_s
        met = _met(share >= ROOFLINE_SHARE_TARGET)
        rows.append(f"| {name} | c1 / roofline | {share:.2f} | >= {ROOFLINE_SHARE_TARGET} | {met} |")
        if baseline:
            ratio = one.tokens_per_s / baseline.tokens_per_s
            rows.append(f"| {name} | c1 / generate() | {ratio:.2f} | >= 1 | {_met(ratio >= 1)} |")
        if (top := by_level.get(64)) and one.tokens_per_s:
            scaling = top.tokens_per_s / one.tokens_per_s
            met = _met(scaling >= SCALING_TARGET)
            rows.append(f"| {name} | c64 / c1 | {scaling:.1f} | >= {SCALING_TARGET:g} | {met} |")
    long = variant.long_prompt
    ttft = long.ttft_ms.p50
    met = _met(ttft is not None and ttft <= TTFT_TARGET_MS)
    what = f"TTFT p50, {long.prompt_tokens} prompt tokens"
    rows.append(f"| {name} | {what} | {_ms(ttft)} ms | <= {TTFT_TARGET_MS:g} ms | {met} |")
    return rows


def _step_parts(parts: list[StepParts], roofline: Roofline) -> list[str]:
    roofline_ms = 1000 / roofline.steps_per_s
    rows = [
        f"A decoding step's parts without a server, ms (medians; the roofline's step: {roofline_ms:.2f} ms)",
        "",
        "| rows | transformer step | lm_head | greedy pick, to host | whole step | of roofline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for part in parts:
        how = "graph replay" if part.captured else "eager, fixed shape"
        rows.append(
            f"| {part.rows} | {part.transformer_ms:.2f} ({how}) | {part.lm_head_ms:.2f} | "
            f"{part.pick_ms:.2f} | {part.step_ms:.2f} | {roofline_ms / part.step_ms:.2f} |"
        )
    return rows

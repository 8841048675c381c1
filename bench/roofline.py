"""The roofline of a decoding step: the weights it reads, over the device's memory bandwidth.

A decoding step of a small batch reads every weight of the language model once (the
lm_head too, which Qwen3-VL ties to the embedding; the embedding lookup itself reads only
the batch's rows) and does little arithmetic per byte, so its fastest possible rate is
the memory bandwidth divided by those bytes. The bandwidth is measured, not taken from a
datasheet: a large on-device copy, timed, counting the bytes read and written. Runs in its
own process, on the device of the run::

    python -m bench.roofline --model DIR --device cuda --dtype bfloat16

prints one JSON object (a Roofline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

COPY_BYTES = 1024**3
COPY_RUNS = 10


@dataclasses.dataclass(frozen=True)
class Roofline:
    device_name: str
    weight_bytes: int  # read by one decoding step
    bandwidth_bytes_per_s: float  # measured
    steps_per_s: float  # bandwidth / weight bytes: the best a step can do

    @classmethod
    def of(cls, device_name: str, weight_bytes: int, bandwidth: float) -> Roofline:
        return cls(device_name, weight_bytes, bandwidth, bandwidth / weight_bytes)


def step_weight_bytes(model: Any) -> int:
    """Bytes of the language model's weights and the lm_head, each tensor counted once."""
    modules: list[nn.Module] = [model.model.language_model, model.lm_head]
    tensors = {id(t): t for module in modules for t in module.parameters()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def model_weight_bytes(model_dir: Path, dtype: torch.dtype) -> int:
    """The step's weight bytes of a checkpoint, from its configuration alone (nothing loaded)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    return step_weight_bytes(model)


def copy_bandwidth(device: torch.device, size: int = COPY_BYTES, runs: int = COPY_RUNS) -> float:
    """Bytes per second that a device-to-device copy moves (each byte read once and written once)."""
    source = torch.ones(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - began)
    return 2 * size / best


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or device.type


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model_dir: Path, device: torch.device, dtype: torch.dtype) -> Roofline:
    return Roofline.of(device_name(device), model_weight_bytes(model_dir, dtype), copy_bandwidth(device))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    roofline = measure(args.model, torch.device(args.device), getattr(torch, args.dtype))
    print(json.dumps(dataclasses.asdict(roofline)))


if __name__ == "__main__":
    main()

"""Settings whose best value depends on where the model runs, resolved once it is loaded.

Measured on an H200 with the real model's size (BENCHMARKS.md, "An NVIDIA H200"): steps
replayed from CUDA graphs gave one stream 2.9 times the tokens per second of eager
`generate()`, and a 1,015-token prompt reached its first token in 41 ms read in one piece
against 68 ms in two. On a CPU neither pays: there is nothing to capture, and a piece's
cost grows with its tokens, so smaller pieces keep running streams at their pace.
"""

from __future__ import annotations

from typing import Literal

import torch

CPU_PREFILL_CHUNK_TOKENS = 512
GPU_PREFILL_CHUNK_TOKENS = 2048


def cuda_graphs(setting: Literal["auto"] | bool, device: torch.device, compiled_graphs: bool) -> bool:
    """WORKER_CUDA_GRAPHS: as set, else on where the model runs on a CUDA device, unless
    WORKER_COMPILE's mode captures graphs of its own (reduce-overhead, max-autotune)."""
    if setting == "auto":
        return device.type == "cuda" and not compiled_graphs
    return setting


def prefill_chunk_tokens(setting: int, device: torch.device) -> int:
    """WORKER_PREFILL_CHUNK_TOKENS: as set, else by device (0)."""
    if setting:
        return setting
    return GPU_PREFILL_CHUNK_TOKENS if device.type == "cuda" else CPU_PREFILL_CHUNK_TOKENS

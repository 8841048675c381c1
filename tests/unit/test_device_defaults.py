"""Settings resolved by where the model runs: CUDA graphs and the prefill's piece size."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from shared.settings import Settings
from worker.device_defaults import (
    CPU_PREFILL_CHUNK_TOKENS,
    GPU_PREFILL_CHUNK_TOKENS,
    cuda_graphs,
    prefill_chunk_tokens,
)

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def test_by_default_cuda_graphs_are_on_where_the_model_runs_on_a_gpu() -> None:
    assert cuda_graphs("auto", GPU, compiled_graphs=False)
    assert not cuda_graphs("auto", CPU, compiled_graphs=False)
    assert not cuda_graphs("auto", GPU, compiled_graphs=True)  # reduce-overhead has its own


def test_a_cuda_graphs_setting_wins() -> None:
    assert not cuda_graphs(False, GPU, compiled_graphs=False)
    assert cuda_graphs(True, CPU, compiled_graphs=False)  # fixed shapes, nothing captured


def test_prompts_are_read_in_bigger_pieces_on_a_gpu_unless_set() -> None:
    assert prefill_chunk_tokens(0, CPU) == CPU_PREFILL_CHUNK_TOKENS == 512
    assert prefill_chunk_tokens(0, GPU) == GPU_PREFILL_CHUNK_TOKENS == 2048
    assert prefill_chunk_tokens(256, GPU) == 256


@pytest.mark.parametrize(
    ("text", "value"), [("auto", "auto"), ("true", True), ("false", False), ("0", False)]
)
def test_cuda_graphs_reads_auto_or_a_boolean(
    monkeypatch: pytest.MonkeyPatch, text: str, value: object
) -> None:
    monkeypatch.setenv("WORKER_CUDA_GRAPHS", text)
    assert Settings().worker_cuda_graphs == value


def test_the_defaults_are_left_to_the_device(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    for name in ("WORKER_CUDA_GRAPHS", "WORKER_PREFILL_CHUNK_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.worker_cuda_graphs, settings.worker_prefill_chunk_tokens) == ("auto", 0)


@pytest.mark.parametrize("text", ["8", "-1", "maybe"])
def test_a_piece_too_small_or_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("WORKER_PREFILL_CHUNK_TOKENS", text)
    with pytest.raises(ValidationError):
        Settings()

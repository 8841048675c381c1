"""The KV cache budget: bytes per token from the model's config, and what a batch costs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from shared.settings import Settings
from worker.engine import public_failure
from worker.kv_budget import CPU_AUTOMATIC_CAP_BYTES, KvBudget, automatic_kv_bytes, kv_bytes_per_token

# Qwen3-VL-2B's text model.
QWEN3_VL_2B = SimpleNamespace(
    num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_size=2048
)


def test_bytes_per_token_count_keys_and_values_of_every_layer_and_kv_head() -> None:
    # 28 layers x 8 KV heads x 128 x (key + value) x 2 bytes: 112 KiB per token.
    assert kv_bytes_per_token(QWEN3_VL_2B, torch.bfloat16) == 28 * 8 * 128 * 2 * 2 == 112 * 1024
    assert kv_bytes_per_token(QWEN3_VL_2B, torch.float32) == 224 * 1024


def test_head_dim_defaults_to_hidden_size_over_heads() -> None:
    config = SimpleNamespace(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=None, head_dim=None, hidden_size=64
    )
    assert kv_bytes_per_token(config, torch.float16) == 2 * 4 * 16 * 2 * 2


def test_a_left_padded_batch_costs_rows_times_its_longest_row() -> None:
    budget = KvBudget(bytes_per_token=10, total_bytes=1000)
    assert budget.capacity_tokens == 100
    assert budget.fits(1, 100) and not budget.fits(1, 101)
    # Two rows of 30 and 50 tokens hold 2 x 50 slots: a third of 40 makes it 3 x 50.
    assert budget.batch_bytes(2, 50) == 1000
    assert budget.fits(2, 50) and not budget.fits(3, 50)
    assert budget.fits(4, 25) and not budget.fits(4, 26)


def test_the_automatic_budget_on_cpu_is_capped() -> None:
    automatic = automatic_kv_bytes(torch.device("cpu"), 0.9)
    assert 0 < automatic <= CPU_AUTOMATIC_CAP_BYTES
    assert automatic_kv_bytes(torch.device("cpu"), 0.01) <= automatic


def test_an_explicit_budget_wins() -> None:
    settings = Settings(kv_cache_bytes=5 * 1024**2)
    budget = KvBudget.for_model(settings, QWEN3_VL_2B, torch.bfloat16, torch.device("cpu"))
    assert budget.total_bytes == 5 * 1024**2 and budget.capacity_tokens == 45


def test_the_default_max_tokens_must_be_within_the_cap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(str(tmp_path))
    for name in ("MAX_TOKENS", "MAX_TOKENS_CAP", "MAX_MODEL_LEN", "KV_CACHE_BYTES"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()
    assert (defaults.max_tokens_cap, defaults.max_model_len, defaults.kv_cache_bytes) == (32768, 32768, 0)
    with pytest.raises(ValidationError, match="MAX_TOKENS_CAP"):
        Settings(max_tokens=100, max_tokens_cap=50)


def test_failures_reach_clients_as_a_stable_code_only() -> None:
    assert public_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate")).code == (
        "out_of_memory"
    )
    assert public_failure(MemoryError()).code == "out_of_memory"
    failed = public_failure(IndexError("index out of range in self"))
    assert failed.code == "generation_failed" and "index" not in str(failed)

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from worker.logits_head import LogitsHead

# With this vocabulary and this limit, one oneDNN call returns at most 10 rows of logits.
VOCAB = 5000
FRESH_OUTPUT_BYTES = 10 * VOCAB * 4


@pytest.mark.parametrize("rows", [1, 3, 10, 11, 25, 32])
def test_every_path_gives_the_lm_heads_logits(rows: int) -> None:
    torch.manual_seed(0)
    owner = types.SimpleNamespace(lm_head=nn.Linear(64, VOCAB, bias=False))
    head = LogitsHead(owner, fresh_output_bytes=FRESH_OUTPUT_BYTES)
    hidden = torch.randn(rows, 64)
    with torch.inference_mode():
        expected = owner.lm_head(hidden)
        logits = head.project(hidden)
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits.argmax(dim=-1), expected.argmax(dim=-1))


def test_the_reused_buffer_serves_fewer_rows_later() -> None:
    owner = types.SimpleNamespace(lm_head=nn.Linear(8, 100, bias=False))
    head = LogitsHead(owner, fresh_output_bytes=10 * 100 * 4)
    with torch.inference_mode():
        for rows in (40, 21, 33):
            hidden = torch.randn(rows, 8)
            torch.testing.assert_close(head.project(hidden), owner.lm_head(hidden))


def test_a_head_with_a_bias_is_called_as_it_is() -> None:
    owner = types.SimpleNamespace(lm_head=nn.Linear(8, 100, bias=True))
    hidden = torch.randn(4, 8)
    with torch.inference_mode():
        torch.testing.assert_close(LogitsHead(owner).project(hidden), owner.lm_head(hidden))


@pytest.mark.parametrize("rows", [1, 12])
def test_a_weight_oneDNN_does_not_take_goes_through_mm(rows: int) -> None:
    # Only float32 weights are packed: a float64 one is multiplied into the buffer.
    owner = types.SimpleNamespace(lm_head=nn.Linear(8, 100, bias=False, dtype=torch.float64))
    hidden = torch.randn(rows, 8, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(LogitsHead(owner).project(hidden), owner.lm_head(hidden))

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from worker.logits_head import PACKED_MAX_ROWS, LogitsHead


@pytest.mark.parametrize("rows", [1, 3, PACKED_MAX_ROWS, PACKED_MAX_ROWS + 5])
def test_every_path_gives_the_lm_heads_logits(rows: int) -> None:
    torch.manual_seed(0)
    owner = types.SimpleNamespace(lm_head=nn.Linear(64, 5000, bias=False))
    head = LogitsHead(owner)
    hidden = torch.randn(rows, 64)
    with torch.inference_mode():
        expected = owner.lm_head(hidden)
        logits = head.project(hidden)
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits.argmax(dim=-1), expected.argmax(dim=-1))


def test_the_reused_buffer_serves_fewer_rows_later() -> None:
    owner = types.SimpleNamespace(lm_head=nn.Linear(8, 100, bias=False))
    head = LogitsHead(owner)
    with torch.inference_mode():
        for rows in (PACKED_MAX_ROWS + 8, PACKED_MAX_ROWS + 1):
            hidden = torch.randn(rows, 8)
            torch.testing.assert_close(head.project(hidden), owner.lm_head(hidden))


def test_a_head_with_a_bias_is_called_as_it_is() -> None:
    owner = types.SimpleNamespace(lm_head=nn.Linear(8, 100, bias=True))
    hidden = torch.randn(4, 8)
    with torch.inference_mode():
        torch.testing.assert_close(LogitsHead(owner).project(hidden), owner.lm_head(hidden))

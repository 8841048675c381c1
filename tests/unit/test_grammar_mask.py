from __future__ import annotations

import torch

from worker.grammar import allow_only, apply_bitmask, new_bitmask

VOCAB = 1000  # not a multiple of 32: the last word is partly padding


def unpacked(bitmask: torch.Tensor) -> torch.Tensor:
    """The allowed tokens of each row, unpacked bit by bit (the obvious way)."""
    bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.view(bitmask.shape[0], -1)[:, :VOCAB].bool()


def test_masked_rows_keep_exactly_their_allowed_tokens_and_the_others_are_untouched() -> None:
    torch.manual_seed(0)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (4, (VOCAB + 31) // 32), dtype=torch.int32)
    allow_only(bitmask, 2, VOCAB - 1)
    allow_only(bitmask, 3, 31)  # bit 31: a negative int32 word
    logits = torch.randn(4, VOCAB)
    expected = logits.clone()
    expected[1:] = expected[1:].masked_fill(~unpacked(bitmask)[1:], float("-inf"))
    apply_bitmask(logits, bitmask, [1, 2, 3])
    assert torch.equal(logits, expected)
    assert (logits[2] > float("-inf")).nonzero().view(-1).tolist() == [VOCAB - 1]
    assert (logits[3] > float("-inf")).nonzero().view(-1).tolist() == [31]


def test_a_fresh_bitmask_allows_everything() -> None:
    logits = torch.randn(2, VOCAB)
    before = logits.clone()
    apply_bitmask(logits, new_bitmask(2, VOCAB), [0, 1])
    assert torch.equal(logits, before)

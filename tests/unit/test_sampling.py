"""The logits math of the sampling parameters, on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch

from worker.sampler import RowSampling, sample_next
from worker.sampling import apply_penalties, token_counts


def rows(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def test_token_counts_ignore_padding() -> None:
    ids = torch.tensor([[1, 1, 3, -1], [0, 4, 5, 5]])
    assert token_counts(ids, 5).tolist() == [[0, 2, 0, 1, 0], [1, 0, 0, 0, 1]]


def test_presence_and_frequency_apply_to_generated_tokens() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    prompt_mask = torch.tensor([[True, False, False, False]])
    counts = torch.tensor([[0, 1, 3, 0]])
    out = apply_penalties(logits, prompt_mask, counts, rows(0.5), rows(0.25), rows(1.0))
    # id 0 is only in the prompt: untouched; id 1: 1 - 0.5 - 0.25; id 2: 1 - 0.5 - 3 * 0.25
    assert out.tolist() == [[1.0, 0.25, -0.25, 1.0]]


def test_negative_penalties_encourage_repetition() -> None:
    out = apply_penalties(
        torch.zeros(1, 2),
        torch.zeros(1, 2, dtype=torch.bool),
        torch.tensor([[2, 0]]),
        rows(-1),
        rows(-2),
        rows(1),
    )
    assert out.tolist() == [[5.0, 0.0]]


def test_repetition_penalty_covers_prompt_and_output() -> None:
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 2.0]])
    prompt_mask = torch.tensor([[True, True, False, False, False]])
    counts = torch.tensor([[0, 0, 1, 1, 0]])
    out = apply_penalties(logits, prompt_mask, counts, rows(0), rows(0), rows(2.0))
    assert out.tolist() == [[1.0, -4.0, 1.0, -4.0, 2.0]]


def test_rows_of_a_batch_are_independent() -> None:
    logits = torch.ones(2, 3)
    prompt_mask = torch.zeros(2, 3, dtype=torch.bool)
    counts = torch.tensor([[1, 0, 0], [0, 2, 0]])
    out = apply_penalties(logits, prompt_mask, counts, rows(1.0, 0.0), rows(0.0, 0.5), rows(1.0, 1.0))
    assert out.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]


@pytest.mark.parametrize("step", [0, 2])
def test_sampler_biases_then_penalises_prompt_and_generated_tokens(step: int) -> None:
    row = RowSampling(
        temperature=0.0,
        top_p=1.0,
        top_k=0,
        repetition_penalty=2.0,
        presence_penalty=1.0,
        logit_bias={3: 0.5},
        prompt_ids=[0, 1],
    )
    logits = torch.full((1, 5), 4.0)
    sample_next(logits, [row], [[2, 2][:step]])  # works on the logits in place
    # prompt ids: repetition only; generated id 2: repetition and presence; id 3: bias
    expected = [2.0, 2.0, 1.0 if step else 4.0, 4.5, 4.0]
    assert logits.tolist() == [expected]

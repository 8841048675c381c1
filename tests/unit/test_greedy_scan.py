"""The greedy scan over bfloat16 logits picks the token of the largest exact logit."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from worker import greedy_scan, packed_linear
from worker.greedy_scan import BF16_UNIT_ROUNDOFF, GreedyScan
from worker.logits_head import LogitsHead
from worker.sampler import best_tokens

VOCAB = 32 * 1024  # blocks of 1,024 tokens
HIDDEN = 64


def weight_of(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(VOCAB, HIDDEN, generator=generator) * 0.02


def scan_of(weight: torch.Tensor) -> GreedyScan:
    try:
        return GreedyScan(weight)
    except RuntimeError as error:  # a CPU whose oneDNN has no bfloat16 linear at all
        pytest.skip(f"no bfloat16 linear here: {error}")


def float64_argmax(weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    return (hidden.double() @ weight.double().t()).argmax(dim=-1)


class Float32Picks:
    """The float32 lm_head's greedy pick, recording the rows the scan hands it."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.rows: list[torch.Tensor] = []

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        self.rows.append(hidden.clone())
        return best_tokens(hidden @ self.weight.t())


@pytest.mark.parametrize("rows", [1, 7, 16, 64])
def test_each_row_gets_the_token_of_its_largest_exact_logit(rows: int) -> None:
    weight = weight_of()
    scan = scan_of(weight)
    float32 = Float32Picks(weight)
    generator = torch.Generator().manual_seed(rows)
    for _ in range(5):
        hidden = torch.randn(rows, HIDDEN, generator=generator) * 3
        assert torch.equal(scan.tokens(hidden, float32), float64_argmax(weight, hidden))
    assert float32.rows == []  # the bound decided every row


def test_rows_past_one_calls_output_go_in_even_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_linear, "FRESH_OUTPUT_BYTES", 10 * VOCAB * 2)  # 10 rows a call
    calls: list[int] = []

    def counted(hidden: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        calls.append(len(hidden))
        return packed_linear.linear(hidden, packed)

    monkeypatch.setattr(greedy_scan, "linear", counted)
    weight = weight_of()
    scan = scan_of(weight)
    hidden = torch.randn(23, HIDDEN)
    assert torch.equal(scan.tokens(hidden, Float32Picks(weight)), float64_argmax(weight, hidden))
    assert calls == [8, 8, 7]


def test_logits_closer_than_bfloat16_can_tell_apart_are_told_apart_exactly() -> None:
    weight = weight_of()
    hidden = torch.randn(4, HIDDEN)
    # For each row, a token made its favourite, and one just above it, by far less than
    # bfloat16's rounding; and an exact twin of the favourite earlier in the vocabulary.
    favourites, above, twins = [100, 2000, 30000, 5000], [101, 31000, 7, 4999], [50, 1000, 20000, 4000]
    for row in range(4):
        direction = hidden[row] / hidden[row].norm()
        weight[favourites[row]] = direction * 0.5
        weight[above[row]] = direction * 0.5 * (1 + 2**-20)
    weight[twins[3]] = weight[above[3]]  # row 3: an exact tie, the first id wins
    scan = scan_of(weight)
    float32 = Float32Picks(weight)
    tokens = scan.tokens(hidden, float32)
    assert tokens.tolist() == [101, 31000, 7, 4000]
    assert torch.equal(tokens, float64_argmax(weight, hidden))
    # Each row alone goes through the one-row kernel, with a bound of its own.
    assert [int(scan.tokens(hidden[row : row + 1], float32)) for row in range(4)] == [101, 31000, 7, 4000]
    assert float32.rows == []


def test_one_row_is_read_from_the_int8_weight_and_more_from_the_bfloat16_one() -> None:
    scan = scan_of(weight_of())
    assert (scan.kernel_for(1).name, scan.kernel_for(2).name) == ("int8", "bfloat16")
    assert scan.kernel_for(1).bound.weight_rounding > scan.kernel_for(2).bound.weight_rounding


def test_rows_the_bound_cannot_settle_get_the_float32_pick_in_their_place() -> None:
    weight = weight_of()
    scan = scan_of(weight)
    hidden = torch.randn(6, HIDDEN, generator=torch.Generator().manual_seed(1))
    hidden[1] = 0.0  # every logit 0: no line above 0 to search from
    hidden[3, 5] = float("nan")
    hidden[4, 2] = float("inf")
    float32 = Float32Picks(weight)
    tokens = scan.tokens(hidden, float32)
    (handed,) = float32.rows
    assert torch.equal(handed.nan_to_num(), hidden[[1, 3, 4]].nan_to_num())
    assert torch.equal(tokens, best_tokens(hidden @ weight.t()))


@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf")])
def test_a_lone_row_the_bound_cannot_settle_gets_the_float32_pick(value: float) -> None:
    weight = weight_of()
    scan = scan_of(weight)
    hidden = torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(3))
    hidden[0, 7] = value
    if value == 0.0:
        hidden[0] = 0.0
    float32 = Float32Picks(weight)
    tokens = scan.tokens(hidden, float32)
    assert len(float32.rows) == 1 and torch.equal(float32.rows[0].nan_to_num(), hidden.nan_to_num())
    assert torch.equal(tokens, best_tokens(hidden @ weight.t()))


def test_a_row_with_too_many_candidates_gets_the_float32_pick() -> None:
    weight = weight_of()
    weight[:, 0] = 1.0  # the first component dwarfs the others: every logit within the bound
    scan = scan_of(weight)
    hidden = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(2))
    hidden[:, 0] = 0.0
    hidden[1, 0] = 100.0
    float32 = Float32Picks(weight)
    tokens = scan.tokens(hidden, float32)
    assert [len(rows) for rows in float32.rows] == [1]
    assert torch.equal(float32.rows[0], hidden[1:2])
    assert tokens[1] == best_tokens(hidden[1:2] @ weight.t())[0]
    alone = Float32Picks(weight)  # the same row alone, through the one-row path
    assert torch.equal(scan.tokens(hidden[1:2], alone), tokens[1:2])
    assert [len(rows) for rows in alone.rows] == [1]


def test_the_kernel_check_fails_logits_rounded_worse_than_the_bound_allows() -> None:
    weight = weight_of()
    scan = scan_of(weight)
    assert scan.kernels_round_as_bounded()
    hidden = torch.randn(4, HIDDEN)
    rounded = hidden.to(torch.bfloat16)
    exact = hidden @ weight.t()
    bound = greedy_scan.RoundingBound(weight, weight.to(torch.bfloat16).__getitem__)
    assert bound.holds(hidden, rounded, weight, exact)
    # Eight units of rounding off at the largest logits: far more than rounding to nearest gives.
    assert not bound.holds(hidden, rounded, weight, exact * (1 + 8 * BF16_UNIT_ROUNDOFF))


def test_the_head_scans_only_where_asked_and_gives_the_same_tokens() -> None:
    torch.manual_seed(0)
    owner = types.SimpleNamespace(lm_head=nn.Linear(HIDDEN, VOCAB, bias=False))
    nn.init.normal_(owner.lm_head.weight, std=0.02)
    scanning, plain = LogitsHead(owner), LogitsHead(owner, greedy_scan_wanted=False)
    assert not plain.scans
    assert scanning.scans == greedy_scan.supported(owner.lm_head.weight)
    hidden = torch.randn(16, HIDDEN)
    with torch.inference_mode():
        assert torch.equal(scanning.greedy_tokens(hidden), plain.greedy_tokens(hidden))
        assert torch.equal(plain.greedy_tokens(hidden), best_tokens(owner.lm_head(hidden)))


def test_only_a_float32_weight_on_a_cpu_is_scanned() -> None:
    assert not greedy_scan.supported(torch.zeros(4, 4, dtype=torch.bfloat16))
    assert not greedy_scan.supported(torch.zeros(4, 4, device="meta"))

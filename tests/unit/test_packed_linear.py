from __future__ import annotations

import pytest
import torch

from worker.packed_linear import even_pieces, linear, pack


@pytest.mark.parametrize(
    ("rows", "per_call", "sizes"),
    [(64, 51, [32, 32]), (23, 10, [8, 8, 7]), (5, 10, [5]), (10, 10, [10]), (3, 0, [1, 1, 1]), (0, 10, [])],
)
def test_rows_go_in_the_fewest_even_pieces(rows: int, per_call: int, sizes: list[int]) -> None:
    pieces = even_pieces(rows, per_call)
    assert [piece.stop - piece.start for piece in pieces] == sizes
    assert [index for piece in pieces for index in range(piece.start, piece.stop)] == list(range(rows))


def test_the_packed_weight_gives_the_linear_layers_product() -> None:
    weight, hidden = torch.randn(300, 16), torch.randn(5, 16)
    try:
        packed = pack(weight)
    except RuntimeError as error:
        pytest.skip(f"no oneDNN linear here: {error}")
    torch.testing.assert_close(linear(hidden, packed), hidden @ weight.t(), rtol=1e-5, atol=1e-5)

"""The left-padded batch cache: rows join and leave, and a failed join changes nothing."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from worker.batch import PaddedBatch, dynamic_layers

LAYERS, HEADS, HEAD_DIM = 3, 2, 4
CPU = torch.device("cpu")


def prefilled(length: int, seed: int, heads: tuple[int, ...] = (HEADS,) * LAYERS) -> DynamicCache:
    """A single-sequence cache as a prefill leaves it (``heads`` per layer)."""
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    for layer, layer_heads in enumerate(heads):
        keys = torch.randn(1, layer_heads, length, HEAD_DIM, generator=generator)
        cache.update(keys, -keys, layer)
    return cache


def snapshot(batch: PaddedBatch) -> list[torch.Tensor]:
    assert batch.cache is not None and batch.attention_mask is not None
    tensors = [batch.attention_mask.clone()]
    for layer in dynamic_layers(batch.cache):
        assert layer.keys is not None and layer.values is not None
        tensors += [layer.keys.clone(), layer.values.clone()]
    return tensors


def same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) and all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second, strict=True)
    )


def test_rows_of_different_lengths_are_left_padded() -> None:
    batch = PaddedBatch()
    short, long = prefilled(3, 1), prefilled(5, 2)
    short_keys = dynamic_layers(short)[0].keys
    long_keys = dynamic_layers(long)[0].keys
    assert short_keys is not None and long_keys is not None
    batch.add(short, 3, CPU)
    batch.add(long, 5, CPU)
    assert (batch.rows, batch.columns) == (2, 5)
    assert batch.attention_mask is not None
    assert batch.attention_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert batch.cache is not None
    keys = dynamic_layers(batch.cache)[0].keys
    assert keys is not None
    assert torch.equal(keys[0, :, 2:], short_keys[0]) and torch.equal(keys[1], long_keys[0])
    assert not keys[0, :, :2].any()


@pytest.mark.parametrize("new_length", [2, 4, 7], ids=["shorter", "as-long", "longer"])
def test_a_failed_join_leaves_the_batch_as_it_was(new_length: int) -> None:
    batch = PaddedBatch()
    batch.add(prefilled(4, 1), 4, CPU)
    batch.add(prefilled(2, 2), 2, CPU)
    before = snapshot(batch)
    # The last layer does not match (one KV head too few): the first layers join, then it fails.
    mismatched = prefilled(new_length, 3, heads=(HEADS,) * (LAYERS - 1) + (HEADS - 1,))
    with pytest.raises(RuntimeError):
        batch.add(mismatched, new_length, CPU)
    assert (batch.rows, batch.columns) == (2, 4)
    assert same(snapshot(batch), before)
    # The batch still takes new rows, and decodes on (the mask grows by one column).
    batch.add(prefilled(6, 4), 6, CPU)
    assert (batch.rows, batch.columns) == (3, 6)
    assert batch.extend_mask().shape == (3, 7)


def test_a_cache_with_other_layers_is_refused_untouched() -> None:
    batch = PaddedBatch()
    batch.add(prefilled(4, 1), 4, CPU)
    before = snapshot(batch)
    with pytest.raises(ValueError, match="layers"):
        batch.add(prefilled(4, 2, heads=(HEADS,) * (LAYERS + 1)), 4, CPU)
    assert same(snapshot(batch), before)


def test_leaving_rows_trim_the_padding_nobody_needs() -> None:
    batch = PaddedBatch()
    batch.add(prefilled(2, 1), 2, CPU)
    batch.add(prefilled(6, 2), 6, CPU)
    batch.keep([0])
    assert (batch.rows, batch.columns) == (1, 2)
    assert batch.attention_mask is not None and batch.attention_mask.tolist() == [[1, 1]]

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


def test_decoding_steps_write_in_place_and_match_concatenation() -> None:
    """A step appends one column without copying the cache; the content is what cat gives."""
    batch = PaddedBatch()
    batch.add(prefilled(5, seed=1), 5, CPU)
    batch.add(prefilled(3, seed=2), 3, CPU)
    assert batch.cache is not None
    expected = [(layer.keys.clone(), layer.values.clone()) for layer in dynamic_layers(batch.cache)]  # type: ignore[union-attr]
    first_layer = dynamic_layers(batch.cache)[0]
    assert first_layer.keys is not None
    storage = first_layer.keys.untyped_storage().data_ptr()
    moved = 0
    for step in range(300):  # past the first buffer's room: it regrows once or twice
        mask = batch.extend_mask()
        assert mask.shape == (2, 6 + step) and bool(mask[:, -1].all())
        for position, layer in enumerate(dynamic_layers(batch.cache)):
            column = torch.full((2, HEADS, 1, HEAD_DIM), float(step))
            keys, values = layer.update(column, -column)
            old_keys, old_values = expected[position]
            expected[position] = (
                torch.cat([old_keys, column], dim=2),
                torch.cat([old_values, -column], dim=2),
            )
            assert torch.equal(keys, expected[position][0]) and torch.equal(values, expected[position][1])
        pointer = dynamic_layers(batch.cache)[0].keys.untyped_storage().data_ptr()  # type: ignore[union-attr]
        moved += pointer != storage
        storage = pointer
    assert 1 <= moved <= 3  # reallocated only when full, not at every step
    assert batch.attention_mask is not None and bool((batch.attention_mask[1, :2] == 0).all())
    batch.keep([1])
    assert batch.columns == 3 + 300  # the padding no row needs is trimmed
    assert torch.equal(dynamic_layers(batch.cache)[0].keys[0], expected[0][0][1, :, 2:])  # type: ignore[index]

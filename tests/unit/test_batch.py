"""The batch's slot cache: rows join and leave without touching the others, steps write in place."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from worker import batch as batch_module
from worker.batch import SlotBatch, SlotLayer, dynamic_layers
from worker.step_graphs import COLUMN_BUCKET, bucket_rows, bucketed_shape

LAYERS, HEADS, HEAD_DIM = 3, 2, 4
CPU = torch.device("cpu")


def prefilled(
    length: int, seed: int, heads: tuple[int, ...] = (HEADS,) * LAYERS, rows: int = 1
) -> DynamicCache:
    """A cache as a prefill leaves it (``heads`` per layer)."""
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    for layer, layer_heads in enumerate(heads):
        keys = torch.randn(rows, layer_heads, length, HEAD_DIM, generator=generator)
        cache.update(keys, -keys, layer)
    return cache


def layer_keys(cache: DynamicCache, layer: int = 0) -> torch.Tensor:
    keys = dynamic_layers(cache)[layer].keys
    assert keys is not None
    return keys


def slot_keys(batch: SlotBatch, slot: int, layer: int = 0) -> torch.Tensor:
    """What a slot holds: its row's keys up to its length."""
    return batch.layers[layer].key_buffer[slot, :, : batch.lengths()[slot]]


def snapshot(batch: SlotBatch) -> list[torch.Tensor]:
    return [slot_keys(batch, slot, layer).clone() for layer in range(LAYERS) for slot in range(batch.rows)]


def step(batch: SlotBatch, value: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One decoding step through every layer, each row's new column full of ``value``."""
    mask = batch.prepare_step()[:, 0, 0]
    column = torch.full((batch.rows, HEADS, 1, HEAD_DIM), value)
    seen = [layer.update(column, -column) for layer in batch.layers]
    batch.advance()
    assert mask.shape == (seen[0][0].shape[0], seen[0][0].shape[2])
    return seen


def test_rows_of_different_lengths_are_left_aligned_in_their_slots() -> None:
    batch = SlotBatch()
    short, long = prefilled(3, 1), prefilled(5, 2)
    assert batch.add(short, 3, CPU) == [0]
    assert batch.add(long, 5, CPU) == [1]
    assert (batch.rows, batch.columns, batch.lengths()) == (2, 5, [3, 5])
    assert torch.equal(slot_keys(batch, 0), layer_keys(short)[0])
    assert torch.equal(slot_keys(batch, 1), layer_keys(long)[0])
    # What a step reads past a row's length is masked, and zeros: NaN would poison the row.
    assert not batch.layers[0].key_buffer[0, :, 3:].any()
    # A step sees each row's own columns, and the new one.
    mask = batch.prepare_step()
    assert mask.shape == (2, 1, 1, 6)
    assert mask[:, 0, 0].tolist() == [[True] * 4 + [False] * 2, [True] * 6]


def test_a_joint_prefill_joins_each_row_without_its_padding() -> None:
    batch = SlotBatch()
    cache = prefilled(4, 1, rows=2)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert batch.add(cache, 4, CPU, mask=mask) == [0, 1]
    assert batch.lengths() == [2, 4]
    assert torch.equal(slot_keys(batch, 0), layer_keys(cache)[0, :, 2:])
    assert torch.equal(slot_keys(batch, 1), layer_keys(cache)[1])


def test_the_choices_of_a_request_each_get_a_copy() -> None:
    batch = SlotBatch()
    cache = prefilled(3, 1)
    assert batch.add(cache, 3, CPU, copies=3) == [0, 1, 2]
    for slot in range(3):
        assert torch.equal(slot_keys(batch, slot), layer_keys(cache)[0])


@pytest.mark.parametrize(
    "cache",
    [prefilled(4, 2, heads=(HEADS,) * (LAYERS + 1)), prefilled(4, 2, heads=(HEADS,) * (LAYERS - 1) + (1,))],
    ids=["more-layers", "fewer-heads"],
)
def test_a_cache_that_does_not_match_is_refused_untouched(cache: DynamicCache) -> None:
    batch = SlotBatch()
    batch.add(prefilled(4, 1), 4, CPU)
    before = snapshot(batch)
    with pytest.raises(ValueError, match="layers"):
        batch.add(cache, 4, CPU)
    assert batch.lengths() == [4]
    assert all(torch.equal(a, b) for a, b in zip(snapshot(batch), before, strict=True))


def test_leaving_copies_nothing_and_a_joining_row_fills_the_hole() -> None:
    batch = SlotBatch()
    caches = [prefilled(length, seed) for seed, length in enumerate((3, 6, 4))]
    for cache, length in zip(caches, (3, 6, 4), strict=True):
        batch.add(cache, length, CPU)
    buffers = [layer.key_buffer.data_ptr() for layer in batch.layers]
    before = snapshot(batch)
    batch.free([1])
    # The others stay where they were, as they were; the step still runs three rows.
    assert [layer.key_buffer.data_ptr() for layer in batch.layers] == buffers
    assert (batch.rows, batch.columns, batch.lengths()) == (3, 4, [3, 0, 4])
    assert torch.equal(slot_keys(batch, 0), before[0]) and torch.equal(slot_keys(batch, 2), before[2])
    # A hole writes to its column 0 and sees only that.
    assert batch.prepare_step()[1, 0, 0].tolist() == [True, False, False, False, False]
    newcomer = prefilled(2, 9)
    assert batch.add(newcomer, 2, CPU) == [1]
    assert torch.equal(slot_keys(batch, 1), layer_keys(newcomer)[0])
    assert [layer.key_buffer.data_ptr() for layer in batch.layers] == buffers
    # The highest slots leaving shorten the step; the last one leaving drops the buffers.
    batch.free([2])
    assert batch.rows == 2
    batch.free([0, 1])
    assert (batch.rows, batch.cache) == (0, None)


def test_decoding_steps_write_each_row_at_its_length_in_place() -> None:
    """A step costs one column per row, not a copy of the cache; the content is what cat gives."""
    batch = SlotBatch()
    first, second = prefilled(5, seed=1), prefilled(3, seed=2)
    batch.add(first, 5, CPU)
    batch.add(second, 3, CPU)
    expected = [
        [(layer_keys(cache, layer)[0], -layer_keys(cache, layer)[0]) for layer in range(LAYERS)]
        for cache in (first, second)
    ]
    storage = batch.layers[0].key_buffer.data_ptr()
    moved = 0
    for number in range(300):  # past the first buffers' room: they regrow once or twice
        seen = step(batch, float(number))
        for row, length in enumerate(batch.lengths()):
            for layer, (keys, values) in enumerate(seen):
                old_keys, old_values = expected[row][layer]
                column = torch.full((HEADS, 1, HEAD_DIM), float(number))
                expected[row][layer] = (torch.cat([old_keys, column], 1), torch.cat([old_values, -column], 1))
                assert torch.equal(keys[row, :, :length], expected[row][layer][0])
                assert torch.equal(values[row, :, :length], expected[row][layer][1])
        pointer = batch.layers[0].key_buffer.data_ptr()
        moved += pointer != storage
        storage = pointer
    assert 1 <= moved <= 3  # reallocated only when full, not at every step
    assert batch.lengths() == [305, 303]


def test_buffers_shrink_once_the_long_row_has_left() -> None:
    batch = SlotBatch()
    batch.add(prefilled(2000, 1), 2000, CPU)
    batch.add(prefilled(3, 2), 3, CPU)
    assert batch.layers[0].shape[2] >= 2000
    batch.free([0])
    _, _, columns = batch.layers[0].shape
    assert columns < 1000 and batch.lengths() == [0, 3]
    assert torch.equal(slot_keys(batch, 1), layer_keys(prefilled(3, 2))[0])


def test_a_batch_that_failed_to_grow_decodes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory while growing: layers already grown hold the same rows, the rest are as they were."""
    batch = SlotBatch()
    batch.add(prefilled(4, 1), 4, CPU)
    before = snapshot(batch)
    resize = SlotLayer.resize
    calls = 0

    def resize_until_memory_runs_out(layer: SlotLayer, *args: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise torch.OutOfMemoryError("no room for the second layer")
        resize(layer, *args)

    monkeypatch.setattr(SlotLayer, "resize", resize_until_memory_runs_out)
    longer = batch_module.HEADROOM_COLUMNS + 100
    with pytest.raises(torch.OutOfMemoryError):
        batch.add(prefilled(longer, 2), longer, CPU)
    assert batch.lengths() == [4]
    assert all(torch.equal(a, b) for a, b in zip(snapshot(batch), before, strict=True))
    monkeypatch.setattr(SlotLayer, "resize", resize)
    batch.add(prefilled(longer, 2), longer, CPU)
    step(batch, 1.0)
    assert batch.lengths() == [5, longer + 1]


def test_steps_at_a_fixed_shape_pad_rows_that_see_only_their_own_first_column() -> None:
    batch = SlotBatch(bucketed_shape)
    batch.add(prefilled(3, 1), 3, CPU)
    batch.add(prefilled(5, 2), 5, CPU)
    batch.add(prefilled(4, 3), 4, CPU)
    kept = snapshot(batch)
    mask = batch.prepare_step()[:, 0, 0]
    # Three rows run as four; six columns as a whole bucket.
    assert mask.shape == (4, COLUMN_BUCKET)
    assert mask.sum(dim=1).tolist() == [4, 6, 5, 1]
    assert mask[3, 0] and not mask[3, 1:].any()
    index_rows, index_columns, _ = batch.step
    assert index_rows.tolist() == [0, 1, 2, 3] and index_columns.tolist() == [3, 5, 4, 0]
    column = torch.full((4, HEADS, 1, HEAD_DIM), 7.0)
    for layer in batch.layers:
        layer.update(column, -column)
    batch.advance()
    # The padding row is a free slot: the rows in use moved on by one token each, untouched.
    assert batch.lengths() == [4, 6, 5] and batch.rows == 3
    assert all(torch.equal(before, slot_keys(batch, slot)[:, :-1]) for slot, before in enumerate(kept[:3]))


def test_the_buffers_generation_changes_when_they_are_replaced_and_never_repeats() -> None:
    seen = set()
    for _ in range(2):  # a failed batch is replaced by a new one: its numbers must be new too
        batch = SlotBatch(bucketed_shape)
        batch.add(prefilled(3, 1), 3, CPU)
        first = batch.generation
        batch.prepare_step()
        batch.advance()
        assert batch.generation == first  # a step within the buffers replaces nothing
        for seed in range(2, 12):
            batch.add(prefilled(3, seed), 3, CPU)  # more slots than the buffers have
        assert batch.generation != first
        seen |= {first, batch.generation}
    assert len(seen) == 4


@pytest.mark.parametrize("keep_buffers", [False, True])
def test_an_emptied_batch_drops_its_buffers_unless_it_keeps_them_for_its_graphs(keep_buffers: bool) -> None:
    batch = SlotBatch(bucketed_shape, keep_buffers=keep_buffers)
    batch.add(prefilled(3, 1), 3, CPU)
    step(batch, 1.0)
    first, buffer = batch.generation, batch.layers[0].key_buffer
    batch.free([0])
    assert batch.rows == 0 and batch.lengths() == []
    assert (batch.cache is not None) == keep_buffers
    # The next request: kept buffers take it in place, where a graph of them still replays.
    assert batch.add(prefilled(5, 2), 5, CPU) == [0]
    step(batch, 2.0)
    assert (batch.generation == first) == keep_buffers
    assert (batch.layers[0].key_buffer is buffer) == keep_buffers
    assert batch.lengths() == [6]
    assert torch.equal(slot_keys(batch, 0)[:, :5], layer_keys(prefilled(5, 2))[0])


def test_kept_buffers_too_small_for_a_newcomer_are_replaced_by_buffers_sized_for_it() -> None:
    batch = SlotBatch(bucketed_shape, keep_buffers=True)
    for seed in range(12):
        batch.add(prefilled(3, seed), 3, CPU)
    batch.free(list(range(12)))  # a burst ends together: its slots are kept
    kept_slots = batch.layers[0].shape[0]
    assert kept_slots >= 12
    long = 2 * batch.layers[0].shape[2]  # longer than the kept columns
    assert batch.add(prefilled(long, 99), long, CPU) == [0]
    slots, _, columns = batch.layers[0].shape
    # Sized for one row of that length, not the burst's slots each as long.
    assert slots < kept_slots and columns > long
    assert torch.equal(slot_keys(batch, 0), layer_keys(prefilled(long, 99))[0])
    step(batch, 1.0)
    assert batch.lengths() == [long + 1]


@pytest.mark.parametrize(
    ("rows", "bucket"), [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (9, 16), (17, 24), (64, 64), (65, 72)]
)
def test_rows_round_up_to_powers_of_two_then_multiples_of_eight(rows: int, bucket: int) -> None:
    assert bucket_rows(rows) == bucket
    assert bucketed_shape(rows, 1) == (bucket, COLUMN_BUCKET)
    assert bucketed_shape(rows, COLUMN_BUCKET + 1) == (bucket, 2 * COLUMN_BUCKET)

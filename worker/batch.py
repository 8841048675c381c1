"""The key/value cache of the running batch: one slot per sequence, in buffers with room.

Every layer keeps its keys and values in two buffers, [slots, KV heads, capacity, head
dim]. A sequence that joins takes the lowest free slot, and its prefilled cache is copied
there, left-aligned (its token i in column i); a sequence that leaves only frees its slot.
Neither touches the other rows' caches: no re-padding to a common length, no row selection.

A decoding step writes each row's new key and value at that row's own length (one scatter
per layer) and attends over the columns up to the longest row's, each row masked to its
own length. The cache's writes for a step cost O(rows), not O(cache); the step reads only
the columns some row still needs, so a long sequence leaving makes the others cheaper at
once.

The buffers grow when a row needs a slot or a column they lack: reallocated with room to
spare, so growing costs O(1) copies per step on average. They shrink when the rows left
need less than half of them (again with room), and are dropped when the batch empties:
memory follows what the running rows hold. A batch at fixed shapes (``keep_buffers``)
keeps them when it empties: its graphs hold their addresses, and dropping them would make
every request that finds the worker idle capture its steps again (on a GPU a capture runs
the step once eagerly and records it once: tens of milliseconds). Kept buffers too small
for the next request are replaced by ones sized for it, not grown slot by slot.

A free slot below the highest one in use (a hole) still goes through the model, seeing
only its own column 0, and its output is not used; joining rows fill the lowest holes
first.

A batch can run its steps at fixed shapes (``step_shape``): rows and columns rounded up to
a few sizes, so that a step of each shape can be captured once as a CUDA graph and
replayed (worker.step_graphs). The extra rows are free slots, seen through as holes are;
the extra columns are masked. ``generation`` names the buffers, a new number at each
reallocation: a graph holds their addresses, so one captured under an older generation
cannot be replayed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Room a buffer gets beyond what it must hold, at least, and as a share of it.
HEADROOM_COLUMNS = 256
HEADROOM_SHARE = 0.25
HEADROOM_SLOTS = 4

# Buffer generations are unique across batches: the engine replaces its batch after a failure.
_generations = itertools.count(1)


def _room_for(columns: int) -> int:
    return columns + max(HEADROOM_COLUMNS, int(columns * HEADROOM_SHARE))


def _slots_for(rows: int) -> int:
    return rows + max(HEADROOM_SLOTS, rows // 4)


def exact_shape(rows: int, columns: int) -> tuple[int, int]:
    """A step's shape as its rows need it: the default, with nothing computed in vain."""
    return rows, columns


def dynamic_layers(cache: DynamicCache) -> list[DynamicLayer]:
    # Qwen3-VL's text model has full attention in every layer: all are DynamicLayers.
    return cast(list[DynamicLayer], cache.layers)


def _tensors(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None and layer.values is not None, "prefilled layers hold tensors"
    return layer.keys, layer.values


class SlotLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer of the batch's cache: its buffers, written by the rows' slots and lengths."""

    def __init__(self, batch: SlotBatch, like: torch.Tensor, slots: int, columns: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.dtype, self.device = like.dtype, like.device
        self.is_initialized = True
        self._batch = batch
        shape = (slots, like.shape[1], columns, like.shape[3])
        # Zeros, not empty memory: a step reads columns past a row's length (masked), and a
        # NaN there would still poison the row (NaN x 0 is NaN).
        self.key_buffer = like.new_zeros(shape)
        self.value_buffer = like.new_zeros(shape)
        self.keys, self.values = self.key_buffer[:0], self.value_buffer[:0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slots, KV heads, columns) the buffers hold."""
        slots, heads, columns, _ = self.key_buffer.shape
        return slots, heads, columns

    def holds(self, keys: torch.Tensor) -> bool:
        """Whether a prefilled layer's keys fit these buffers (heads, head size, dtype, device)."""
        buffer = self.key_buffer
        return (
            keys.shape[1] == buffer.shape[1]
            and keys.shape[3] == buffer.shape[3]
            and (keys.dtype, keys.device) == (buffer.dtype, buffer.device)
        )

    def resize(self, slots: int, columns: int, used_slots: int, used_columns: int) -> None:
        """New buffers of this size, holding the ``used`` part of the old ones."""
        keys = self.key_buffer.new_zeros((slots, self.key_buffer.shape[1], columns, self.key_buffer.shape[3]))
        values = self.value_buffer.new_zeros(keys.shape)
        keys[:used_slots, :, :used_columns] = self.key_buffer[:used_slots, :, :used_columns]
        values[:used_slots, :, :used_columns] = self.value_buffer[:used_slots, :, :used_columns]
        self.key_buffer, self.value_buffer = keys, values

    def put(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy one row's prefilled keys and values ([heads, length, dim]) into its slot."""
        length = keys.shape[1]
        self.key_buffer[slot, :, :length] = keys
        self.value_buffer[slot, :, :length] = values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoding step: each row's one new column, written at that row's length."""
        if key_states.shape[-2] != 1:
            raise ValueError("the batch cache takes one token per row and step (prompts are prefilled apart)")
        index_rows, index_columns, mask = self._batch.step
        rows, columns = mask.shape
        self.key_buffer[index_rows, :, index_columns] = key_states[:, :, 0]
        self.value_buffer[index_rows, :, index_columns] = value_states[:, :, 0]
        self.keys = self.key_buffer[:rows, :, :columns]
        self.values = self.value_buffer[:rows, :, :columns]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        # The step's mask is sized from this (the longest row's length, plus the new column).
        # A tensor's size, not a Python int: a compiled forward treats it as dynamic.
        return self._batch.step[2].shape[1] - 1


class SlotBatch:
    def __init__(
        self, step_shape: Callable[[int, int], tuple[int, int]] = exact_shape, keep_buffers: bool = False
    ) -> None:
        self.cache: DynamicCache | None = None
        # (rows, columns) a step needs -> (rows, columns) it runs with, each at least as many.
        self._step_shape = step_shape
        self._keep_buffers = keep_buffers  # when the batch empties
        self.generation = 0  # a new number whenever the layers' buffers are replaced
        # Tokens each slot holds; 0: the slot is free (a row holds its prompt, never empty).
        self._lengths: list[int] = []
        # The decoding step under way: where each row writes (row, column), and its mask.
        self.step: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = (
            torch.empty(0),
            torch.empty(0),
            torch.empty(0, 1, dtype=torch.bool),
        )

    @property
    def rows(self) -> int:
        """Slots a step runs: up to the highest one in use."""
        for slot in range(len(self._lengths) - 1, -1, -1):
            if self._lengths[slot]:
                return slot + 1
        return 0

    @property
    def columns(self) -> int:
        """The longest row's length."""
        return max(self._lengths, default=0)

    @property
    def layers(self) -> list[SlotLayer]:
        return [] if self.cache is None else cast(list[SlotLayer], self.cache.layers)

    def _free_slots(self, count: int) -> list[int]:
        free = [slot for slot, length in enumerate(self._lengths) if not length][:count]
        return free + list(range(len(self._lengths), len(self._lengths) + count - len(free)))

    def add(
        self,
        cache: DynamicCache,
        length: int,
        device: torch.device,
        copies: int = 1,
        mask: torch.Tensor | None = None,
    ) -> list[int]:
        """Copy a prefill's rows into free slots; the slots they got, in row order.

        ``copies`` rows share a one-row prefill (the choices of one request). A prefill of
        several prompts comes with its ``mask`` ([rows, length], 0 on their left padding).

        All or nothing: a cache that does not match the batch is refused before anything
        changes, and a failure to grow the buffers (out of memory) leaves each layer with
        its old buffers or bigger ones holding the same rows, a batch as good as before.
        """
        new_layers = dynamic_layers(cache)
        if mask is None:
            rows = [(0, length)] * copies
        else:
            rows = [(row, int(mask[row].sum())) for row in range(mask.shape[0])]
        columns = max(n for _, n in rows) + 1
        if self.cache is not None and not self.rows and not self._holds(len(rows), columns):
            # Buffers kept by an emptied batch, too small for the newcomer: new ones sized
            # for it, rather than every kept slot grown to its length (a burst of rows
            # followed by one long prompt would otherwise ask for slots x its length).
            self.cache = None
        if self.cache is None:
            self.cache = DynamicCache()
            self.cache.layers = [SlotLayer(self, _tensors(layer)[0], 0, 0) for layer in new_layers]
            self.generation = next(_generations)
        mine = self.layers
        if len(mine) != len(new_layers):
            raise ValueError(f"a cache of {len(new_layers)} layers cannot join a batch of {len(mine)}")
        for layer, new_layer in zip(mine, new_layers, strict=True):
            if not layer.holds(_tensors(new_layer)[0]):
                raise ValueError("a cache whose layers do not match the batch's cannot join it")
        slots = self._free_slots(len(rows))
        self._reserve(max(slots) + 1, columns)
        for layer, new_layer in zip(mine, new_layers, strict=True):
            keys, values = _tensors(new_layer)
            for slot, (row, n) in zip(slots, rows, strict=True):
                # A row of a joint prefill is left-padded: its tokens are the last n columns.
                layer.put(slot, keys[row, :, length - n : length], values[row, :, length - n : length])
        for slot, (_, n) in zip(slots, rows, strict=True):
            if slot == len(self._lengths):
                self._lengths.append(n)
            else:
                self._lengths[slot] = n
        return slots

    def _holds(self, slots: int, columns: int) -> bool:
        have_slots, _, have_columns = self.layers[0].shape
        return slots <= have_slots and columns <= have_columns

    def _reserve(self, slots: int, columns: int) -> None:
        used_slots, used_columns = self.rows, self.columns
        for layer in self.layers:
            have_slots, _, have_columns = layer.shape
            if slots > have_slots or columns > have_columns:
                self.generation = next(_generations)
                layer.resize(
                    _slots_for(slots) if slots > have_slots else have_slots,
                    _room_for(columns) if columns > have_columns else have_columns,
                    used_slots,
                    used_columns,
                )

    def prepare_step(self) -> torch.Tensor:
        """Get ready for a decoding step; the mask of it ([rows, 1, 1, columns], true where seen).

        Each row writes its token at its own length and sees the columns before it; a hole
        (or a row added to reach the step's shape) writes to its column 0 and sees only
        that. The mask has the shape attention takes, so transformers uses it as it is
        instead of building one from a [rows, columns] one at every step.
        """
        assert self.cache is not None and self.rows, "a step needs rows"
        rows, columns = self._step_shape(self.rows, self.columns + 1)
        lengths = self._lengths[:rows] + [0] * (rows - len(self._lengths))
        self._reserve(rows, columns)
        device = self.layers[0].key_buffer.device
        index_columns = torch.tensor(lengths, device=device)
        index_rows = torch.arange(rows, device=device)
        mask = torch.arange(columns, device=device).unsqueeze(0) <= index_columns.unsqueeze(1)
        self.step = (index_rows, index_columns, mask)
        return mask[:, None, None, :]

    def advance(self) -> None:
        """The step completed: every row in use holds one more token."""
        self._lengths = [length + 1 if length else 0 for length in self._lengths]

    def free(self, slots: list[int]) -> None:
        """These rows leave; nothing is copied unless the buffers shrink by half or more."""
        for slot in slots:
            self._lengths[slot] = 0
        rows = self.rows
        del self._lengths[rows:]
        if not rows:
            if not self._keep_buffers:
                self.cache = None
            return
        columns = self.columns
        step_rows, step_columns = self._step_shape(rows, columns + 1)
        for layer in self.layers:
            have_slots, _, have_columns = layer.shape
            if _slots_for(step_rows) * 2 <= have_slots or _room_for(step_columns) * 2 <= have_columns:
                self.generation = next(_generations)
                layer.resize(_slots_for(step_rows), _room_for(step_columns), rows, columns)

    def lengths(self) -> list[int]:
        """Tokens each slot holds (0 when free), for tests and metrics."""
        return list(self._lengths)

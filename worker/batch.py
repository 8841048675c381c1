"""The key/value cache of a batch of sequences of different lengths, left-padded.

Each new sequence is prefilled on its own, then joins the running batch: the shorter side
is padded on the left so that all rows end at the same column, and the attention mask
hides the padding. Finished sequences leave by row selection, and padding columns that no
row needs any more are trimmed, so a long sequence leaving makes the others cheaper again.

Between joins and departures, a decoding step appends one column to every layer. The
default transformers layer does that with ``torch.cat``, copying the whole cache at every
step: a sequence of n tokens then costs O(n^2) in copies, which dominates long contexts.
Here each layer keeps its keys and values in buffers with room to grow (``GrowingLayer``):
a step writes its column in place, and a full buffer is reallocated a quarter larger, so
the copies cost O(1) per step on average. The mask grows the same way.
"""

from __future__ import annotations

from typing import cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def _left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


# Columns of room a layer gets beyond what it holds, at least, and as a share of it.
HEADROOM_COLUMNS = 256
HEADROOM_SHARE = 0.25


def _room_for(columns: int) -> int:
    return columns + max(HEADROOM_COLUMNS, int(columns * HEADROOM_SHARE))


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A cache layer whose ``keys`` / ``values`` are views of buffers with room to grow."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._length = keys.shape[-2]
        self._key_buffer = self._buffer_like(keys, _room_for(self._length))
        self._value_buffer = self._buffer_like(values, _room_for(self._length))
        self._key_buffer[..., : self._length, :] = keys
        self._value_buffer[..., : self._length, :] = values
        self._expose()

    @staticmethod
    def _buffer_like(tensor: torch.Tensor, columns: int) -> torch.Tensor:
        shape = list(tensor.shape)
        shape[-2] = columns
        return tensor.new_empty(shape)

    def _expose(self) -> None:
        self.keys = self._key_buffer[..., : self._length, :]
        self.values = self._value_buffer[..., : self._length, :]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        added = key_states.shape[-2]
        end = self._length + added
        if end > self._key_buffer.shape[-2]:
            self._key_buffer = self._regrown(self._key_buffer, end)
            self._value_buffer = self._regrown(self._value_buffer, end)
        self._key_buffer[..., self._length : end, :] = key_states
        self._value_buffer[..., self._length : end, :] = value_states
        self._length = end
        self._expose()
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    @property
    def length(self) -> int:
        return self._length

    def rewind(self, length: int) -> None:
        """Forget the columns written after ``length`` (a step that did not complete)."""
        self._length = length
        self._expose()

    def _regrown(self, buffer: torch.Tensor, needed: int) -> torch.Tensor:
        grown = self._buffer_like(buffer, _room_for(needed))
        grown[..., : self._length, :] = buffer[..., : self._length, :]
        return grown


def dynamic_layers(cache: DynamicCache) -> list[DynamicLayer]:
    # Qwen3-VL's text model has full attention in every layer: all are DynamicLayers.
    return cast(list[DynamicLayer], cache.layers)


def _tensors(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None and layer.values is not None, "prefilled layers hold tensors"
    return layer.keys, layer.values


def _grow_in_place(cache: DynamicCache) -> None:
    """Give every layer of the cache buffers with room for the coming steps."""
    for position, layer in enumerate(dynamic_layers(cache)):
        keys, values = _tensors(layer)
        cache.layers[position] = GrowingLayer(keys, values)


class PaddedBatch:
    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None  # [rows, columns], 0 on padding
        self._mask_buffer = torch.ones(0, 0, dtype=torch.long)  # the mask, and room to grow

    @property
    def rows(self) -> int:
        return 0 if self.attention_mask is None else self.attention_mask.shape[0]

    @property
    def columns(self) -> int:
        return 0 if self.attention_mask is None else self.attention_mask.shape[1]

    def add(
        self,
        cache: DynamicCache,
        length: int,
        device: torch.device,
        copies: int = 1,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Append a prefilled single-sequence cache as the last row(s); all or nothing.

        ``copies`` rows share the prefill (the choices of one request): each gets its copy.
        A cache of several prefilled rows comes with its ``mask`` ([rows, length], 0 on
        their left padding).

        The layers are joined one at a time, each replacing its old tensors at once, so
        the memory this needs beyond the batch is one layer's, not the whole cache twice.
        If joining any layer fails (out of memory), the layers already joined are cut
        back to their old rows and columns (views, which allocate nothing): the batch is
        left exactly as it was and the caller fails only the new sequence.
        """
        if mask is None:
            mask = torch.ones(copies, length, dtype=torch.long, device=device)
        if copies > 1:
            for new_layer in dynamic_layers(cache):
                keys, values = _tensors(new_layer)
                new_layer.keys, new_layer.values = (
                    keys.repeat(copies, 1, 1, 1),
                    values.repeat(copies, 1, 1, 1),
                )
        if self.cache is None or self.attention_mask is None:
            _grow_in_place(cache)
            self.cache = cache
            self._set_mask(mask)
            return
        mine, theirs = dynamic_layers(self.cache), dynamic_layers(cache)
        if len(mine) != len(theirs):
            raise ValueError(f"a cache of {len(theirs)} layers cannot join a batch of {len(mine)}")
        rows, grow = self.rows, max(0, length - self.columns)
        pad_new = max(0, self.columns - length)
        joined_mask = torch.cat([_left_pad(self.attention_mask, grow, 1), _left_pad(mask, pad_new, 1)])
        joined = 0
        try:
            for layer, new_layer in zip(mine, theirs, strict=True):
                (my_keys, my_values), (new_keys, new_values) = _tensors(layer), _tensors(new_layer)
                keys = torch.cat([_left_pad(my_keys, grow, 2), _left_pad(new_keys, pad_new, 2)])
                values = torch.cat([_left_pad(my_values, grow, 2), _left_pad(new_values, pad_new, 2)])
                layer.keys, layer.values = keys, values
                joined += 1
        except BaseException:
            for layer in mine[:joined]:
                keys, values = _tensors(layer)
                layer.keys, layer.values = keys[:rows, :, grow:], values[:rows, :, grow:]
            raise
        _grow_in_place(self.cache)
        self._set_mask(joined_mask)

    def _set_mask(self, mask: torch.Tensor) -> None:
        columns = mask.shape[1]
        self._mask_buffer = mask.new_ones(mask.shape[0], _room_for(columns))
        self._mask_buffer[:, :columns] = mask
        self.attention_mask = self._mask_buffer[:, :columns]

    def extend_mask(self) -> torch.Tensor:
        """The mask for a decoding step: every row gains one real column (written in place)."""
        assert self.attention_mask is not None
        columns = self.columns + 1
        if columns > self._mask_buffer.shape[1]:
            self._set_mask(self.attention_mask)
        # The buffer beyond the mask holds ones: the new column is already there.
        self.attention_mask = self._mask_buffer[:, :columns]
        return self.attention_mask

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order) and trim padding no row needs."""
        if not rows:
            self.cache = self.attention_mask = None
            return
        assert self.cache is not None and self.attention_mask is not None
        index = torch.tensor(rows, device=self.attention_mask.device)
        mask = self.attention_mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        self._set_mask(mask[:, start:])
        for layer in dynamic_layers(self.cache):
            keys, values = _tensors(layer)
            layer.keys = keys.index_select(0, index)[:, :, start:]
            layer.values = values.index_select(0, index)[:, :, start:]
        _grow_in_place(self.cache)

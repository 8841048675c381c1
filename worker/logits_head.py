"""The model's forward pass, with the lm_head computed the fastest way for the batch.

The model's own lm_head (``nn.Linear``) is slow for the shapes decoding gives it on a CPU,
and the logits are big: [rows, 151,936] floats, 39 MB at 64 rows in float32. Measured on
a 2-core AMD EPYC (AVX2), one thread, hidden size 64 (the tiny checkpoint), ms per call:

    rows                               1      4     16     32     64
    F.linear, new output tensor       4.8      -   12.4      -   58.5
    mm into a reused buffer           4.5    7.0   12.6   18.6   26.5
    mm, weight stored [hidden, vocab] 1.9    5.8   13.1   19.2   28.6
    oneDNN, weight prepacked          3.2    3.6    7.8   11.8   45.8

- A tensor of more than 32 MB comes straight from the operating system, and faulting its
  pages in costs as much as computing it: the 64-row logits go into a buffer that lives
  as long as the engine.
- MKL's sgemm repacks the whole weight at every call; oneDNN with a weight packed once
  does not (vLLM's CPU backend packs its linear layers the same way). Its output is a new
  tensor, so it is used while that stays under 32 MB (32 rows).
- One row (a prefill, or a lone stream) is a matrix-vector product, fastest over the
  weight stored transposed.

The extra layouts are kept on a CPU, for a weight of at most ``MAX_EXTRA_BYTES``; anywhere
else the lm_head is one ``mm`` into the buffer. All give the same logits up to float
rounding (max 1.3e-5 apart above).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

# Weight size up to which the CPU keeps the two extra layouts (each a copy of the weight).
MAX_EXTRA_BYTES = 256 * 1024**2
# Rows up to which the prepacked oneDNN product is used (its output must stay under 32 MB).
PACKED_MAX_ROWS = 32


def _packable(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.numel() * weight.element_size() <= MAX_EXTRA_BYTES
        and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    )


class LogitsHead:
    def __init__(self, model: Any) -> None:
        self._model = model
        self._buffer: torch.Tensor | None = None
        head = model.lm_head
        self._weight: torch.Tensor | None = None
        if isinstance(head, nn.Linear) and head.bias is None:
            self._weight = head.weight.detach()
        self._transposed: torch.Tensor | None = None
        self._packed: torch.Tensor | None = None
        if self._weight is not None and _packable(self._weight):
            self._transposed = self._weight.t().contiguous()
            try:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(self._weight, PACKED_MAX_ROWS)
            except (RuntimeError, AttributeError):
                self._packed = None  # a torch without oneDNN's linear: mm it is

    def forward(self, rows: list[int] | None = None, **inputs: Any) -> tuple[torch.Tensor, DynamicCache]:
        """Run the model; the logits of each row's last position ([rows, vocab]) and the cache.

        ``rows``: the rows whose logits are wanted, in this order (all of them by default).
        The logits are scratch space: the next call may overwrite them.
        """
        outputs = self._model.model(**inputs)
        hidden = outputs.last_hidden_state[:, -1]
        if rows is not None:
            hidden = hidden.index_select(0, torch.tensor(rows, device=hidden.device))
        return self.project(hidden), outputs.past_key_values

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self._weight
        if weight is None:
            return self._model.lm_head(hidden)  # type: ignore[no-any-return]
        rows = hidden.shape[0]
        if rows == 1 and self._transposed is not None:
            return hidden @ self._transposed
        if rows <= PACKED_MAX_ROWS and self._packed is not None:
            return torch.ops.mkldnn._linear_pointwise(  # type: ignore[no-any-return]
                hidden, self._packed, None, "none", [], ""
            )
        buffer = self._buffer
        fits = buffer is not None and buffer.shape[0] >= rows
        if buffer is None or not fits or (buffer.dtype, buffer.device) != (hidden.dtype, hidden.device):
            buffer = self._buffer = hidden.new_empty(rows, weight.shape[0])
        logits = buffer[:rows]
        torch.mm(hidden, weight.t(), out=logits)
        return logits

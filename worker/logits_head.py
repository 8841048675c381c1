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
  tensor, so a batch whose logits would pass 31 MB (51 rows here) is computed in pieces
  under that, each copied into the buffer. Measured on a 2-core AMD EPYC (AVX-512), ms:

    rows                               33     48     64
    mm into a reused buffer          13.3   20.8   18.8
    oneDNN, one call                  4.2    5.4   23.4
    oneDNN, pieces of 32 copied       6.2    7.9   10.2
- One row (a prefill, or a lone stream) is a matrix-vector product, fastest over the
  weight stored transposed.

The extra layouts are kept on a CPU, for a weight of at most ``MAX_EXTRA_BYTES``; anywhere
else the lm_head is one ``mm`` into the buffer. All give the same logits up to float
rounding (max 1.3e-5 apart above).

Greedy rows need no logits, only the token of the largest: where the CPU computes in
bfloat16, two more layouts (the weight in bfloat16, and in int8 for a lone row) find it
in half the time, checked exactly (``worker.greedy_scan``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from worker import greedy_scan
from worker.greedy_scan import GreedyScan
from worker.packed_linear import FRESH_OUTPUT_BYTES, even_pieces, linear, pack
from worker.sampler import best_tokens

# Weight size up to which the CPU keeps the two extra layouts (each a copy of the weight),
# and the greedy scan its two (three quarters of one).
MAX_EXTRA_BYTES = 256 * 1024**2


def _packable(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.numel() * weight.element_size() <= MAX_EXTRA_BYTES
        and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    )


class LogitsHead:
    def __init__(
        self, model: Any, fresh_output_bytes: int = FRESH_OUTPUT_BYTES, greedy_scan_wanted: bool = True
    ) -> None:
        self._model = model
        self._fresh_output_bytes = fresh_output_bytes
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
                self._packed = pack(self._weight)
            except (RuntimeError, AttributeError):
                self._packed = None  # a torch without oneDNN's linear: mm it is
        self._scan: GreedyScan | None = None
        if greedy_scan_wanted and self._packed is not None and greedy_scan.supported(self._weight):
            scan = GreedyScan(self._weight)
            if scan.kernels_round_as_bounded():  # else it says why, and float32 it is
                self._scan = scan

    @property
    def scans(self) -> bool:
        """Whether greedy tokens come from the bfloat16 scan (WORKER_GREEDY_BF16_SCAN, where it pays)."""
        return self._scan is not None

    def hidden(self, rows: list[int] | None = None, **inputs: Any) -> tuple[torch.Tensor, DynamicCache]:
        """Run the model without the lm_head: each row's last hidden state ([rows, hidden]) and the cache."""
        outputs = self._model.model(**inputs)
        hidden = outputs.last_hidden_state[:, -1]
        if rows is not None:
            hidden = hidden.index_select(0, torch.tensor(rows, device=hidden.device))
        return hidden, outputs.past_key_values

    def step(
        self, cache: DynamicCache, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """A decoding step over a batch's cache: every row's last hidden state ([rows, hidden])."""
        hidden, _ = self.hidden(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        return hidden

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self._weight
        if weight is None:
            return self._model.lm_head(hidden)  # type: ignore[no-any-return]
        rows = hidden.shape[0]
        if rows == 1 and self._transposed is not None:
            return hidden @ self._transposed
        if self._packed is not None:
            return self._packed_product(hidden, self._packed)
        logits = self._scratch(hidden)
        torch.mm(hidden, weight.t(), out=logits)
        return logits

    def greedy_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The token of each row's largest logit, as ``best_tokens(self.project(hidden))``."""
        if self._scan is None:
            return self._float32_tokens(hidden)
        return self._scan.tokens(hidden, self._float32_tokens)

    def _float32_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        return best_tokens(self.project(hidden))

    def _packed_product(self, hidden: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        rows, vocab = hidden.shape[0], packed.shape[0]
        pieces = even_pieces(rows, self._fresh_output_bytes // (vocab * hidden.element_size()))
        if len(pieces) == 1:
            return linear(hidden, packed)
        logits = self._scratch(hidden)
        for piece in pieces:
            logits[piece].copy_(linear(hidden[piece], packed))
        return logits

    def _scratch(self, hidden: torch.Tensor) -> torch.Tensor:
        """The reused logits buffer, at least as many rows as ``hidden``; its first rows."""
        assert self._weight is not None
        rows, buffer = hidden.shape[0], self._buffer
        fits = buffer is not None and buffer.shape[0] >= rows
        if buffer is None or not fits or (buffer.dtype, buffer.device) != (hidden.dtype, hidden.device):
            buffer = self._buffer = hidden.new_empty(rows, self._weight.shape[0])
        return buffer[:rows]

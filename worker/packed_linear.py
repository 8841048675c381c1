"""oneDNN's linear over a weight packed once, as the lm_head's CPU layouts use it
(``worker.logits_head`` says why, with measurements). Its output is a new tensor each
call, so a caller with many rows computes them in pieces of at most ``FRESH_OUTPUT_BYTES``
of output.
"""

from __future__ import annotations

import torch

# The batch size oneDNN packs the weight for (it serves any other size too).
PACKED_FOR_ROWS = 32
# The most bytes of output one oneDNN call returns: a fresh tensor up to about this size
# is recycled by malloc, a bigger one is mapped from the operating system every time
# (glibc's mmap threshold grows up to 32 MiB).
FRESH_OUTPUT_BYTES = 31 * 1024**2


def pack(weight: torch.Tensor) -> torch.Tensor:
    """The weight ([out, in], float32 or bfloat16) in oneDNN's layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_FOR_ROWS)  # type: ignore[no-any-return]


def linear(hidden: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``hidden @ weight.T`` over the packed weight, in the hidden states' dtype."""
    return torch.ops.mkldnn._linear_pointwise(hidden, packed, None, "none", [], "")  # type: ignore[no-any-return]


def even_pieces(rows: int, per_call: int) -> list[slice]:
    """The rows in as few pieces of at most ``per_call`` as can be, of even sizes: 64 rows
    at 51 a call go as two of 32 rather than one of 51 and one of 13."""
    per_call = max(1, per_call)
    pieces = -(-rows // per_call)
    size = -(-rows // pieces) if rows else 1
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]

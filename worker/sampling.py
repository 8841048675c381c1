"""Logits math for OpenAI's sampling parameters, as batched tensor functions.

The functions take logits of shape [batch, vocab] and one parameter per row ([batch]
tensors), so the engine applies them to all the rows that use penalties in one call per
step. Semantics follow OpenAI and vLLM: the logit bias is added first (worker/sampler.py),
then the repetition penalty (CTRL's, as in transformers and vLLM) over prompt and
generated tokens, then the presence and frequency penalties over the generated tokens
only. Temperature, top-p and top-k come after these.
"""

from __future__ import annotations

import torch


def token_counts(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[batch, vocab] count of each id per row of ``token_ids`` [batch, length].

    Ids outside ``0..vocab_size-1`` count for nothing, so ragged rows can be padded with
    ``-1`` (or ``vocab_size``).
    """
    valid = (token_ids >= 0) & (token_ids < vocab_size)
    # Padding lands in one extra column, dropped at the end.
    index = torch.where(valid, token_ids, vocab_size).long()
    counts = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=torch.long, device=token_ids.device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return counts[:, :vocab_size]


def apply_penalties(
    logits: torch.Tensor,
    prompt_mask: torch.Tensor,
    output_counts: torch.Tensor,
    presence: torch.Tensor,
    frequency: torch.Tensor,
    repetition: torch.Tensor,
) -> torch.Tensor:
    """Penalised copy of ``logits`` [batch, vocab].

    ``prompt_mask`` [batch, vocab] (bool) marks the ids in each prompt, ``output_counts``
    [batch, vocab] counts the ids generated so far; ``presence``, ``frequency`` and
    ``repetition`` are [batch]. A repetition penalty above 1 divides positive logits and
    multiplies negative ones of every id seen in the prompt or the output; the presence
    penalty is subtracted once from every generated id, the frequency penalty once per
    occurrence.
    """
    output_mask = output_counts > 0
    seen = prompt_mask | output_mask
    scale = torch.where(seen, repetition.to(logits.dtype).unsqueeze(1), 1.0)
    logits = torch.where(logits > 0, logits / scale, logits * scale)
    logits = logits - frequency.to(logits.dtype).unsqueeze(1) * output_counts.to(logits.dtype)
    return logits - presence.to(logits.dtype).unsqueeze(1) * output_mask.to(logits.dtype)

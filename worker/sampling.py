"""Logits math for OpenAI's sampling parameters, as batched tensor functions.

The functions take logits of shape [batch, vocab] and one parameter per row ([batch]
tensors), so a decode loop over many sequences applies them in one call per step;
``SamplingProcessor`` wraps them for ``generate()``, a batch of one. Semantics follow
OpenAI and vLLM: the logit bias is added first, then the repetition penalty (CTRL's, as in
transformers and vLLM) over prompt and generated tokens, then the presence and frequency
penalties over the generated tokens only. Temperature, top-p and top-k come after these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from shared.jobs import SamplingParams


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


def logit_bias_rows(
    biases: Sequence[Mapping[int, float]], vocab_size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Dense [batch, vocab] bias from one ``{token_id: bias}`` mapping per row."""
    dense = torch.zeros(len(biases), vocab_size, dtype=torch.float32, device=device)
    for row, bias in enumerate(biases):
        if bias:
            ids = torch.tensor(list(bias), dtype=torch.long, device=device)
            dense[row, ids] = torch.tensor(list(bias.values()), dtype=torch.float32, device=device)
    return dense


def apply_logit_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``logits`` plus ``bias`` (both [batch, vocab]), as OpenAI's ``logit_bias``: a bias of
    -100 in effect bans a token and +100 in effect forces it."""
    return logits + bias.to(logits.dtype)


def needs_processing(sampling: SamplingParams, repetition_penalty: float) -> bool:
    return bool(
        sampling.logit_bias
        or sampling.presence_penalty
        or sampling.frequency_penalty
        or repetition_penalty != 1.0
    )


class SamplingProcessor(LogitsProcessor):
    """Logit bias and penalties for ``generate()``: one sequence whose prompt is known.

    ``generate()`` hands every step the prompt followed by the tokens generated so far.
    The per-row tensors are built at the first step, on the logits' device and width.
    """

    def __init__(self, sampling: SamplingParams, repetition_penalty: float, prompt_ids: list[int]) -> None:
        self._sampling = sampling
        self._repetition_penalty = repetition_penalty
        self._prompt_ids = prompt_ids
        self._rows: _Rows | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._rows is None:
            self._rows = self._build(scores)
        rows = self._rows
        vocab_size = scores.shape[-1]
        generated = input_ids[:, len(self._prompt_ids) :]
        logits = apply_logit_bias(scores, rows.bias)
        logits = apply_penalties(
            logits,
            rows.prompt_mask,
            token_counts(generated, vocab_size),
            rows.presence,
            rows.frequency,
            rows.repetition,
        )
        return logits  # type: ignore[return-value]

    def _build(self, scores: torch.Tensor) -> _Rows:
        device, vocab_size = scores.device, scores.shape[-1]
        sampling = self._sampling
        return _Rows(
            prompt_mask=token_counts(torch.tensor([self._prompt_ids], device=device), vocab_size) > 0,
            bias=logit_bias_rows([sampling.logit_bias], vocab_size, device),
            presence=torch.tensor([sampling.presence_penalty], device=device),
            frequency=torch.tensor([sampling.frequency_penalty], device=device),
            repetition=torch.tensor([self._repetition_penalty], device=device),
        )


@dataclass(frozen=True)
class _Rows:
    prompt_mask: torch.Tensor
    bias: torch.Tensor
    presence: torch.Tensor
    frequency: torch.Tensor
    repetition: torch.Tensor


def reseed(seed: int | None) -> None:
    """Seed the sampler before a generation: the request's seed makes its output
    reproducible; without one, fresh entropy, so that an earlier seeded request does not
    make later unseeded ones predictable.

    ``generate()`` takes no ``torch.Generator``, so this seeds torch's global generators;
    a decode loop should keep one ``torch.Generator`` per sequence instead.
    """
    if seed is None:
        torch.seed()
    else:
        torch.manual_seed(seed)

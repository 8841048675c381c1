"""Picks the next token of every sequence in a batch, each with its own settings.

At small model sizes sampling over the 152k-token vocabulary costs more than the model,
so the sampler avoids full-vocabulary sorts: top-k narrows the candidates with ``topk``
before anything else, and plain sampling (no top-k, no top-p) is one softmax and one
``multinomial`` for the whole batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from shared.jobs import SamplingParams
from worker.sampling import apply_penalties, token_counts


@dataclass
class RowSampling:
    """One sequence's resolved sampling settings (request values, else checkpoint defaults)."""

    temperature: float
    top_p: float
    top_k: int  # 0: no limit
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    generator: torch.Generator | None = None
    prompt_ids: list[int] = field(default_factory=list)  # for the repetition penalty
    _prompt_mask: torch.Tensor | None = None  # [vocab] bool, built at first use

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def resolve(
    sampling: SamplingParams, defaults: object, device: torch.device, prompt_ids: list[int] | None = None
) -> RowSampling:
    """Fill what a request left open from the checkpoint's generation_config."""

    def default(name: str, fallback: float) -> float:
        value = getattr(defaults, name, None)
        return fallback if value is None else float(value)

    do_sample = bool(getattr(defaults, "do_sample", True))
    temperature = sampling.temperature
    if temperature is None:
        temperature = default("temperature", 1.0) if do_sample else 0.0
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(sampling.seed)
    return RowSampling(
        temperature=temperature,
        top_p=sampling.top_p if sampling.top_p is not None else default("top_p", 1.0),
        top_k=sampling.top_k if sampling.top_k is not None else int(default("top_k", 0)),
        repetition_penalty=(
            sampling.repetition_penalty
            if sampling.repetition_penalty is not None
            else default("repetition_penalty", 1.0)
        ),
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        logit_bias=dict(sampling.logit_bias),
        generator=generator,
        prompt_ids=list(prompt_ids or []),
    )


def _prompt_mask(row: RowSampling, vocab: int, device: torch.device) -> torch.Tensor:
    if row._prompt_mask is None:
        ids = torch.tensor([row.prompt_ids], dtype=torch.long, device=device)
        row._prompt_mask = token_counts(ids, vocab)[0] > 0
    return row._prompt_mask


def _adjust(logits: torch.Tensor, rows: list[RowSampling], histories: list[list[int]]) -> None:
    """Logit bias, then penalties, in place; only the rows that ask for them pay."""
    device, vocab = logits.device, logits.shape[1]
    for index, row in enumerate(rows):
        if row.logit_bias:
            ids = torch.tensor(list(row.logit_bias), device=device)
            logits[index, ids] += torch.tensor(list(row.logit_bias.values()), device=device)
    penalised = [i for i, row in enumerate(rows) if row.penalised]
    if not penalised:
        return
    chosen = [rows[i] for i in penalised]
    longest = max(len(histories[i]) for i in penalised)
    padded = [histories[i] + [-1] * (longest - len(histories[i])) for i in penalised]
    logits[penalised] = apply_penalties(
        logits[penalised],
        torch.stack([_prompt_mask(row, vocab, device) for row in chosen]),
        token_counts(torch.tensor(padded, dtype=torch.long, device=device), vocab),
        torch.tensor([row.presence_penalty for row in chosen], device=device),
        torch.tensor([row.frequency_penalty for row in chosen], device=device),
        torch.tensor([row.repetition_penalty for row in chosen], device=device),
    )


def _uniforms(rows: list[RowSampling], device: torch.device) -> torch.Tensor:
    """One uniform number per row; rows with a seed draw from their own generator."""
    if all(row.generator is None for row in rows):
        return torch.rand(len(rows), 1, device=device)
    draws = [torch.rand(1, generator=row.generator, device=device) for row in rows]
    return torch.stack(draws)


def _draw(probs: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    """One draw per row from (unnormalised) probabilities, by inverting the CDF.

    ``torch.multinomial`` over a 152k vocabulary costs ~3 ms per row on a CPU; a cumulative
    sum and a binary search cost ~0.1 ms.
    """
    cdf = probs.cumsum(dim=-1)
    targets = _uniforms(rows, probs.device) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, targets, right=True).squeeze(1)
    return picked.clamp_(max=probs.shape[-1] - 1)


@functools.cache
def _block_size(vocab: int) -> int | None:
    """A divisor of the vocabulary size near 1,024 (151,936 = 128 x 1,187), or None."""
    divisors = [d for d in range(256, 4097) if vocab % d == 0]
    return min(divisors, key=lambda d: abs(d - 1024)) if divisors else None


def _draw_from_logits(logits: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    """One draw per row from softmax(logits) over the whole vocabulary, in two levels.

    A softmax and a cumulative sum over [batch, 152k] cost several passes over memory; this
    reads the logits once (a log-sum-exp per block of ~1k tokens), draws a block from the
    block masses, then draws the token inside that block only: the same distribution.
    """
    batch, vocab = logits.shape
    size = _block_size(vocab)
    if size is None:
        return _draw(torch.softmax(logits, dim=-1), rows)
    blocks = logits.view(batch, vocab // size, size)
    block_log_mass = torch.logsumexp(blocks, dim=-1)
    block_probs = torch.softmax(block_log_mass, dim=-1)
    cdf = block_probs.cumsum(dim=-1)
    # Scaled just below the total so that rounding can never select past the last block.
    targets = _uniforms(rows, logits.device) * cdf[:, -1:] * (1 - 2**-20)
    block = torch.searchsorted(cdf, targets, right=True).clamp_(max=vocab // size - 1)
    inside = blocks[torch.arange(batch, device=logits.device), block.squeeze(1)]
    # Probabilities of the chosen block's tokens, on the same scale as the block CDF.
    weights = (inside - block_log_mass.gather(1, block)).exp_() * block_probs.gather(1, block)
    offset = targets - (cdf.gather(1, block) - block_probs.gather(1, block))
    token = torch.searchsorted(weights.cumsum(dim=-1), offset, right=True).clamp_(max=size - 1)
    return (block * size + token).squeeze(1)


def _sample(logits: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    """Sample every row; ``logits`` is scratch space and is overwritten."""
    temperatures = torch.tensor([row.temperature for row in rows], device=logits.device)
    logits.div_(temperatures.unsqueeze(1))
    vocab = logits.shape[1]
    if all(row.top_k <= 0 and row.top_p >= 1.0 for row in rows):
        return _draw_from_logits(logits, rows)
    widest = max(row.top_k if 0 < row.top_k < vocab else vocab for row in rows)
    values, candidates = torch.topk(logits, widest, dim=-1)  # sorted, best first
    for index, row in enumerate(rows):
        if 0 < row.top_k < widest:
            values[index, row.top_k :] = float("-inf")
    probs = torch.softmax(values, dim=-1)
    top_p = torch.tensor([row.top_p for row in rows], device=logits.device).unsqueeze(1)
    # Keep the smallest prefix whose mass reaches top_p (the best candidate always stays).
    outside = (probs.cumsum(dim=-1) - probs) >= top_p
    probs = probs.masked_fill(outside, 0.0)
    picked = _draw(probs, rows)
    return candidates.gather(1, picked.unsqueeze(1)).squeeze(1)


def sample_next(logits: torch.Tensor, rows: list[RowSampling], histories: list[list[int]]) -> list[int]:
    """The next token id of each row of ``logits`` ([batch, vocab]), which it overwrites."""
    # The adjustments and the sampling below work in place: copying [batch, vocab] logits
    # costs as much as sampling them.
    logits = logits.float()
    if any(row.penalised or row.logit_bias for row in rows):
        _adjust(logits, rows, histories)
    greedy = [i for i, row in enumerate(rows) if row.greedy]
    if len(greedy) == len(rows):
        tokens = logits.argmax(dim=-1)
    elif not greedy:  # the common case: no copy of the [batch, vocab] logits
        tokens = _sample(logits, rows)
    else:
        sampled = [i for i, row in enumerate(rows) if not row.greedy]
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        tokens[greedy] = logits[greedy].argmax(dim=-1)
        tokens[sampled] = _sample(logits[sampled], [rows[i] for i in sampled])
    return [int(token) for token in tokens.tolist()]

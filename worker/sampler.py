"""Picks the next token of every sequence in a batch, each with its own settings.

Each row takes the path its own settings call for, whatever the other rows ask: greedy
(argmax), plain sampling over the whole vocabulary, or truncated sampling (top-k and/or
top-p). Rows are grouped by path, and truncated rows also by their top-k width, so every
tensor operation a row goes through has the same shape alone as in any batch.

A draw is one uniform number per row, turned into a token by inverting the row's CDF. For
a seeded row that number is a hash of (seed, token index), not the next output of a
stateful generator: the token sampled at index ``i`` is a pure function of the seed, ``i``
and the row's logits. So a seeded request samples the same tokens alone or beside any
other rows, and a worker that resumes it at index ``i`` in another process continues it
exactly. Unseeded rows draw from a generator of their own, seeded by the OS.

At small model sizes sampling over the 152k-token vocabulary costs more than the model,
so the sampler avoids full-vocabulary sorts: top-k narrows the candidates with ``topk``
before anything else, and plain sampling reads the logits once (see
``_draw_from_logits``).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from shared.jobs import SamplingParams
from worker.grammar import apply_bitmask
from worker.sampling import apply_penalties, token_counts

# Uniform numbers are multiples of 2**-24: float32 holds each of them exactly, so a draw
# does not depend on the device's rounding of the conversion.
UNIFORM_BITS = 24
UNIFORM_STEPS = 1 << UNIFORM_BITS

# What a forbidden token's log probability is reported as (JSON has no -inf).
LOWEST_LOGPROB = -9999.0

_unseeded = random.Random()  # seeded by the OS; nothing else draws from it


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
    seed: int | None = None
    prompt_ids: list[int] = field(default_factory=list)  # for the repetition penalty
    _prompt_mask: torch.Tensor | None = None  # [vocab] bool, built at first use
    # Counts of the generated ids, kept up to date one token at a time: rebuilding them
    # from the whole history at every step costs O(length) per step.
    _counts: torch.Tensor | None = None  # [vocab] long
    _history: Sequence[int] | None = None  # the history list the counts are of...
    _counted: int = 0  # ...and how many of its tokens they hold
    _bias: tuple[torch.Tensor, torch.Tensor] | None = None  # logit_bias as (ids, values)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def width(self, vocab: int) -> int:
        """How many of the best candidates top-k keeps (the whole vocabulary without a cut)."""
        return self.top_k if 0 < self.top_k < vocab else vocab

    def path(self, vocab: int) -> tuple[str, int]:
        """How this row is sampled, with the candidate width that shapes its tensors."""
        if self.greedy:
            return ("greedy", vocab)
        width = self.width(vocab)
        if width == vocab and self.top_p >= 1.0:
            return ("plain", vocab)
        return ("truncated", width)


def resolve(
    sampling: SamplingParams,
    defaults: object,
    device: torch.device | None = None,
    prompt_ids: list[int] | None = None,
) -> RowSampling:
    """Fill what a request left open from the checkpoint's generation_config.

    ``device`` is accepted for existing callers only: draws are hashed on the host, so the
    settings no longer hold a device generator.
    """
    del device

    def default(name: str, fallback: float) -> float:
        value = getattr(defaults, name, None)
        return fallback if value is None else float(value)

    do_sample = bool(getattr(defaults, "do_sample", True))
    temperature = sampling.temperature
    if temperature is None:
        temperature = default("temperature", 1.0) if do_sample else 0.0
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
        seed=sampling.seed,
        prompt_ids=list(prompt_ids or []),
    )


def seeded_uniform(seed: int, index: int) -> float:
    """The uniform number in [0, 1) behind token ``index`` of a request seeded with ``seed``.

    A keyed hash rather than a generator's stream: the same in every process and on every
    device, and for index ``i`` whatever was drawn before it.
    """
    key = seed.to_bytes(16, "little", signed=True) + index.to_bytes(8, "little")
    digest = hashlib.blake2b(key, digest_size=8, person=b"sampler-draw").digest()
    return (int.from_bytes(digest, "little") >> (64 - UNIFORM_BITS)) / UNIFORM_STEPS


def _uniform(row: RowSampling, index: int) -> float:
    if row.seed is None:
        return _unseeded.getrandbits(UNIFORM_BITS) / UNIFORM_STEPS
    return seeded_uniform(row.seed, index)


def _prompt_mask(row: RowSampling, vocab: int, device: torch.device) -> torch.Tensor:
    if row._prompt_mask is None:
        ids = torch.tensor([row.prompt_ids], dtype=torch.long, device=device)
        row._prompt_mask = token_counts(ids, vocab)[0] > 0
    return row._prompt_mask


def _bias_of(row: RowSampling, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if row._bias is None:
        ids = torch.tensor(list(row.logit_bias), dtype=torch.long, device=device)
        row._bias = ids, torch.tensor(list(row.logit_bias.values()), dtype=torch.float32, device=device)
    return row._bias


def _output_counts(
    row: RowSampling, history: Sequence[int], vocab: int, device: torch.device
) -> torch.Tensor:
    """The row's generated-id counts for ``history``, adding only the tokens new since last time.

    A sequence's history is one list that only grows, so the counts are kept for that list
    object; any other history is counted afresh.
    """
    known = row._counted
    if row._counts is None or row._history is not history or len(history) < known:
        row._counts = torch.zeros(vocab, dtype=torch.long, device=device)
        row._history, known = history, 0
    new = [token for token in history[known:] if 0 <= token < vocab]
    if new:
        ids = torch.tensor(new, dtype=torch.long, device=device)
        row._counts.index_add_(0, ids, torch.ones_like(ids))
    row._counted = len(history)
    return row._counts


def _adjust(logits: torch.Tensor, rows: list[RowSampling], histories: Sequence[Sequence[int]]) -> None:
    """Logit bias, then penalties, in place; only the rows that ask for them pay.

    Both are one tensor operation for all the rows that use them: the bias of every row
    is one indexed add, and the penalties work on counts each row keeps up to date.
    """
    device, vocab = logits.device, logits.shape[1]
    biased = [i for i, row in enumerate(rows) if row.logit_bias]
    if biased:
        pairs = [_bias_of(rows[i], device) for i in biased]
        row_index = torch.cat([torch.full_like(ids, i) for i, (ids, _) in zip(biased, pairs, strict=True)])
        ids = torch.cat([ids for ids, _ in pairs])
        values = torch.cat([values for _, values in pairs]).to(logits.dtype)
        logits.index_put_((row_index, ids), values, accumulate=True)
    penalised = [i for i, row in enumerate(rows) if row.penalised]
    if not penalised:
        return
    chosen = [rows[i] for i in penalised]
    logits[penalised] = apply_penalties(
        logits[penalised],
        torch.stack([_prompt_mask(row, vocab, device) for row in chosen]),
        torch.stack([_output_counts(rows[i], histories[i], vocab, device) for i in penalised]),
        torch.tensor([row.presence_penalty for row in chosen], device=device),
        torch.tensor([row.frequency_penalty for row in chosen], device=device),
        torch.tensor([row.repetition_penalty for row in chosen], device=device),
    )


def _draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One draw per row from (unnormalised) probabilities, by inverting the CDF.

    ``torch.multinomial`` over a 152k vocabulary costs ~3 ms per row on a CPU; a cumulative
    sum and a binary search cost ~0.1 ms.
    """
    cdf = probs.cumsum(dim=-1)
    targets = uniforms * cdf[:, -1:]
    picked = torch.searchsorted(cdf, targets, right=True).squeeze(1)
    return picked.clamp_(max=probs.shape[-1] - 1)


@functools.cache
def block_size(vocab: int) -> int | None:
    """A divisor of the vocabulary size near 1,024 (151,936 = 128 x 1,187), or None."""
    divisors = [d for d in range(256, 4097) if vocab % d == 0]
    return min(divisors, key=lambda d: abs(d - 1024)) if divisors else None


def best_tokens(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=-1)``, the same ids (the first of equal maxima), about 5x faster.

    On a CPU, ``argmax`` over a row of 152k floats is a scalar loop, while ``amax`` is
    vectorised: the maximum of each block of ~1k logits, the first block holding the
    row's maximum, then the first maximum inside it.
    """
    batch, vocab = logits.shape
    size = block_size(vocab)
    if size is None:
        return logits.argmax(dim=-1)
    blocks = logits.view(batch, vocab // size, size)
    block = blocks.amax(dim=-1).argmax(dim=-1)
    inside = blocks[torch.arange(batch, device=logits.device), block].argmax(dim=-1)
    return block * size + inside


def _draw_from_logits(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One draw per row from softmax(logits) over the whole vocabulary, in two levels.

    A softmax and a cumulative sum over [batch, 152k] cost several passes over memory; this
    takes each block of ~1k tokens' mass, draws a block from the block masses, then draws
    the token inside that block only: the same distribution. It works in place in
    ``logits`` (which it overwrites): a [64, 152k] temporary is 39 MB, which the allocator
    takes fresh from the operating system each time, at the cost of faulting every page in.
    """
    batch, vocab = logits.shape
    size = block_size(vocab)
    if size is None:
        return _draw(torch.softmax(logits, dim=-1), uniforms)
    blocks = logits.view(batch, vocab // size, size)
    block_max = blocks.amax(dim=-1, keepdim=True)
    # A block the grammar or the bias forbids whole is all -inf: it keeps mass 0, not NaN.
    block_max = torch.where(block_max.isfinite(), block_max, 0.0)
    exps = blocks.sub_(block_max).exp_()  # exp(logit - its block's max), in place
    block_sums = exps.sum(dim=-1)
    block_probs = torch.softmax(block_sums.log() + block_max.squeeze(-1), dim=-1)
    cdf = block_probs.cumsum(dim=-1)
    # Scaled just below the total so that rounding can never select past the last block.
    targets = uniforms * cdf[:, -1:] * (1 - 2**-20)
    block = torch.searchsorted(cdf, targets, right=True).clamp_(max=vocab // size - 1)
    inside = exps[torch.arange(batch, device=logits.device), block.squeeze(1)]
    # Probabilities of the chosen block's tokens, on the same scale as the block CDF.
    chosen_mass = block_probs.gather(1, block)
    weights = inside * (chosen_mass / block_sums.gather(1, block))
    offset = targets - (cdf.gather(1, block) - chosen_mass)
    token = torch.searchsorted(weights.cumsum(dim=-1), offset, right=True).clamp_(max=size - 1)
    return (block * size + token).squeeze(1)


def _draw_truncated(
    logits: torch.Tensor, rows: list[RowSampling], width: int, uniforms: torch.Tensor
) -> torch.Tensor:
    """One draw per row among its ``width`` best candidates, then its top-p prefix of them."""
    values, candidates = torch.topk(logits, width, dim=-1)  # sorted, best first
    probs = torch.softmax(values, dim=-1)
    top_p = torch.tensor([row.top_p for row in rows], device=logits.device).unsqueeze(1)
    # Keep the smallest prefix whose mass reaches top_p (the best candidate always stays).
    outside = (probs.cumsum(dim=-1) - probs) >= top_p
    picked = _draw(probs.masked_fill_(outside, 0.0), uniforms)
    return candidates.gather(1, picked.unsqueeze(1)).squeeze(1)


def _sample_group(
    path: tuple[str, int], logits: torch.Tensor, rows: list[RowSampling], uniforms: list[float]
) -> torch.Tensor:
    """Tokens for rows that share a path; ``logits`` is scratch space and is overwritten."""
    kind, width = path
    if kind == "greedy":
        return best_tokens(logits)
    temperatures = torch.tensor([row.temperature for row in rows], device=logits.device)
    logits.div_(temperatures.unsqueeze(1))
    drawn = torch.tensor(uniforms, dtype=logits.dtype, device=logits.device).unsqueeze(1)
    if kind == "plain":
        return _draw_from_logits(logits, drawn)
    return _draw_truncated(logits, rows, width, drawn)


@dataclass(frozen=True)
class TokenLogprobs:
    """A sampled token's log probability, and the best alternatives (token id, logprob)."""

    logprob: float
    top: list[tuple[int, float]]


@dataclass(frozen=True)
class Sampled:
    tokens: list[int]
    logprobs: dict[int, TokenLogprobs]  # by row, for the rows that asked


def sample_next(
    logits: torch.Tensor,
    rows: list[RowSampling],
    histories: Sequence[Sequence[int]],
    indices: Sequence[int] | None = None,
) -> list[int]:
    """The next token id of each row of ``logits``; see ``sample_batch``."""
    return sample_batch(logits, rows, histories, indices).tokens


def _log_probs(logits: torch.Tensor, rows: list[RowSampling], asked: Sequence[int]) -> torch.Tensor:
    """log softmax of the asking rows' logits after temperature (greedy rows: unscaled)."""
    chosen = logits.index_select(0, torch.tensor(list(asked), device=logits.device))
    temperatures = [rows[i].temperature if rows[i].temperature > 0 else 1.0 for i in asked]
    chosen.div_(torch.tensor(temperatures, device=logits.device).unsqueeze(1))
    return torch.log_softmax(chosen, dim=-1)


def sample_batch(
    logits: torch.Tensor,
    rows: list[RowSampling],
    histories: Sequence[Sequence[int]],
    indices: Sequence[int] | None = None,
    bitmask: torch.Tensor | None = None,
    masked_rows: Sequence[int] = (),
    logprob_rows: dict[int, int] | None = None,
) -> Sampled:
    """The next token id of each row of ``logits`` ([batch, vocab]), which it overwrites.

    ``histories[i]`` holds the tokens row ``i`` generated so far (for the penalties), and
    ``indices[i]`` is the index, among its generated tokens, of the token being sampled:
    0 for the first one. It defaults to ``len(histories[i])``, which is that index when the
    history is complete. A seeded row's token is a pure function of its seed, its index and
    its logits after its own bias and penalties: calling this for index ``i`` with the same
    logits and history gives the same token in any batch, in any process, and whatever was
    sampled before, which is how a sequence resumed at token ``i`` after a failover
    continues exactly as it would have. Greedy rows take the argmax.

    ``bitmask`` rows (one per batch row, 32 tokens per int32) restrict ``masked_rows`` to
    the tokens their grammar allows, after bias and penalties. ``logprob_rows`` maps a row to
    how many alternatives it wants; its log probabilities are those of the distribution
    after bias, penalties, the grammar mask and temperature, before top-k and top-p (the
    logits vLLM's samplers report as processed).
    """
    # The adjustments and the sampling below work in place: copying [batch, vocab] logits
    # costs as much as sampling them.
    logits = logits.float()
    if indices is None:
        indices = [len(history) for history in histories]
    if any(row.penalised or row.logit_bias for row in rows):
        _adjust(logits, rows, histories)
    if bitmask is not None and masked_rows:
        apply_bitmask(logits, bitmask, list(masked_rows))
    asked = sorted(logprob_rows or {})
    log_probs = _log_probs(logits, rows, asked) if asked else None
    vocab = logits.shape[1]
    groups: dict[tuple[str, int], list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault(row.path(vocab), []).append(position)
    uniforms = [0.0 if row.greedy else _uniform(row, index) for row, index in zip(rows, indices, strict=True)]
    if len(groups) == 1:  # the common case: no copy of the [batch, vocab] logits
        ((path, _),) = groups.items()
        tokens = _sample_group(path, logits, rows, uniforms)
    else:
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        for path, members in groups.items():
            chosen = torch.tensor(members, device=logits.device)
            tokens[chosen] = _sample_group(
                path,
                logits.index_select(0, chosen),
                [rows[i] for i in members],
                [uniforms[i] for i in members],
            )
    picked = [int(token) for token in tokens.tolist()]
    return Sampled(picked, _logprobs_of(log_probs, asked, picked, logprob_rows or {}))


def _logprobs_of(
    log_probs: torch.Tensor | None, asked: list[int], picked: list[int], wanted: dict[int, int]
) -> dict[int, TokenLogprobs]:
    if log_probs is None:
        return {}
    width = max(wanted[row] for row in asked)
    top_values, top_ids = log_probs.topk(width, dim=-1) if width else (log_probs[:, :0], log_probs[:, :0])
    chosen = log_probs.gather(1, torch.tensor([[picked[row]] for row in asked], device=log_probs.device))
    result = {}
    for position, row in enumerate(asked):
        count = wanted[row]
        top = list(
            zip(top_ids[position, :count].tolist(), top_values[position, :count].tolist(), strict=True)
        )
        result[row] = TokenLogprobs(
            _finite(chosen[position, 0].item()), [(int(i), _finite(v)) for i, v in top]
        )
    return result


def _finite(value: float) -> float:
    """-inf (a token the grammar forbids) as OpenAI writes an impossible token: -9999.0."""
    return max(float(value), LOWEST_LOGPROB)

"""The greedy pick from a bfloat16 lm_head, proven to be the token of the largest logit.

On a CPU with bfloat16 dot-product instructions (AVX-512 BF16, AMX), oneDNN computes the
lm_head with its weight in bfloat16 in well under half the time of float32: half the
bytes to read and twice the products per instruction. A lone row, a matrix-vector product
bound by the bytes it reads, is read from the weight in int8 instead (``int8_kernel``).
Measured on a 2-core AMD EPYC (Zen 4), hidden size 64, 152k tokens, one thread, the
caches flushed before each call as the other processes of a server flush them, median ms
per greedy pick of all the rows:

    rows                                      1      2      4      8     16     32     64
    float32 lm_head (logits_head), argmax   1.93   3.37   3.00   4.03   6.73  10.04  23.01
    this scan, with its proof               1.33   2.21   1.98   2.70   3.96   5.96  11.46

A bfloat16 logit is not the float32 one, so the scan does not take its argmax on trust.
Each bfloat16 logit ``lo`` is within ``u' * |lo| + A`` of the exact dot product
(``RoundingBound``: the result's own rounding, plus what rounding the weight and the hidden
state and summing in float32 can move it, by Cauchy-Schwarz). The
largest ``lo`` thus gives a floor the largest exact logit is above, and a line below which
no token's ``lo`` can reach that floor. The few tokens above the line (a handful a row)
get their logits again in float64 from the float32 weight and hidden state, and the
largest wins, the first of equal ones as ``argmax`` takes it. A row the bound cannot
narrow to a few candidates (a flat distribution, no logit above 0, non-finite values) is
left to the float32 lm_head. The bound assumes the kernels round their results to nearest
and sum in float32: the scan checks that on random rows before it is used.

The answer is the token of the largest logit computed in float64. The float32 lm_head's
argmax is the same token unless two logits are within float32 rounding of each other,
where the float32 pick itself depends on the kernel, and the batch's size, that computed
it.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import torch

from worker import metrics, packed_linear
from worker.packed_linear import even_pieces, linear, pack
from worker.sampler import block_size

BF16_UNIT_ROUNDOFF = 2.0**-8  # 8 significant bits, rounded to nearest even
FP32_UNIT_ROUNDOFF = 2.0**-24
# A row is searched token by token in the blocks of the vocabulary whose maximum reaches
# its line: one that needs more than this share of the blocks...
MAX_CANDIDATE_BLOCK_SHARE = 0.25
# ...or more candidates than this many bytes of float64 products is left to float32.
MAX_RECOMPUTED_BYTES = 4 * 1024**2
# Rows of random hidden states the kernel's rounding is checked on, once.
PROBE_ROWS = 8
# Rows of the weight taken in float64 at a time, to compute or check a bound.
CHUNK_ROWS = 8192

Number = TypeVar("Number", float, torch.Tensor)

log = logging.getLogger(__name__)
# The counter's two series, looked up once rather than at every step.
_DECIDED_ROWS = metrics.GREEDY_SCAN_ROWS.labels("decided")
_FLOAT32_ROWS = metrics.GREEDY_SCAN_ROWS.labels("float32")


def supported(weight: torch.Tensor) -> bool:
    """Whether the scan pays for this weight here: float32 on a CPU that computes in bfloat16."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 2:
        return False
    if block_size(weight.shape[0]) is None:  # the search goes by blocks of the vocabulary
        return False
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    # Without these instructions oneDNN emulates bfloat16 with float32 arithmetic: unmeasured.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, check, lambda: False)()) for check in checks)


class RoundingBound:
    """How far a bfloat16 logit can be from the exact one, from the weight's own rounding.

    A logit ``lo`` of weight row ``w`` and hidden state ``h``, computed from ``w~`` (the
    weight as the kernel holds it) and ``h~`` (rounded to bfloat16), with float32 sums,
    then rounded to bfloat16, is within ``u' * |lo| + A`` of ``w . h`` (Cauchy-Schwarz on
    each difference):

    - ``u' = u / (1 - u)``: the result's rounding to nearest, relative to itself;
    - ``A = |w~|max * |h~ - h| + D * |h| + gamma(2H) * |w~|max * |h~|``: the hidden
      state's rounding, the weight's (``D``: the longest ``|w~ - w|`` over the rows, known
      exactly in advance: for bfloat16 about half the worst case ``u * |w|``) and the
      float32 sums (at most two roundings a term), plus what inputs read as 0 (subnormals)
      move.
    """

    def __init__(self, weight: torch.Tensor, held: Callable[[slice], torch.Tensor]) -> None:
        """``held(rows)``: those rows of the weight as the kernel holds them."""
        self.longest_row = self.weight_rounding = self.largest_weight = 0.0
        # A few thousand rows at a time: the weight whole in float64 would be twice its size.
        for start in range(0, weight.shape[0], CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            exact, low = weight[rows].double(), held(rows).double()
            self.longest_row = max(self.longest_row, float(low.norm(dim=1).max()))
            self.weight_rounding = max(self.weight_rounding, float((low - exact).norm(dim=1).max()))
            self.largest_weight = max(self.largest_weight, float(low.abs().max()))
        self.hidden_size = weight.shape[1]
        n = 2 * self.hidden_size * FP32_UNIT_ROUNDOFF
        self.sums = n / (1 - n)
        self.relative = BF16_UNIT_ROUNDOFF / (1 - BF16_UNIT_ROUNDOFF)

    def absolute(self, hidden: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
        """``A`` of each row ([rows] float64), with a margin for the float64 arithmetic."""
        exact, low = hidden.double(), rounded.double()
        margin: torch.Tensor = self.absolute_of(exact.norm(dim=1), low.norm(dim=1), (low - exact).norm(dim=1))
        return margin

    def absolute_of(self, norm: Number, rounded_norm: Number, rounding: Number) -> Number:
        """``A`` from ``|h|``, ``|h~|`` and ``|h~ - h|`` (floats, or tensors of them)."""
        bound = self.longest_row * rounding + self.weight_rounding * norm
        bound += self.sums * self.longest_row * rounded_norm
        bound += self.hidden_size * 2.0**-120 * (1 + self.largest_weight + rounded_norm)
        return bound * (1 + 2.0**-20) + 1e-12 * self.longest_row * norm

    def line(self, best: Number, absolute: Number) -> Number:
        """Where a row's candidates start, from its largest bfloat16 logit ``best`` and its
        ``A``: the largest exact logit is at least ``floor = best - u' * |best| - A``, and a
        token of ``lo > 0`` can reach it only if ``lo * (1 + u') + A >= floor``."""
        return (best - self.relative * abs(best) - 2 * absolute) / (1 + self.relative)

    def holds(
        self, hidden: torch.Tensor, rounded: torch.Tensor, weight: torch.Tensor, low: torch.Tensor
    ) -> bool:
        """Whether the kernel's logits ``low`` stay within the bound of the exact ones."""
        absolute = self.absolute(hidden, rounded).unsqueeze(1)
        for start in range(0, weight.shape[0], CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            exact = hidden.double() @ weight[rows].double().t()
            chunk = low[:, rows].double()
            if not bool(((chunk - exact).abs() <= self.relative * chunk.abs() + absolute).all()):
                return False
        return True


def _int8_product(hidden: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return torch._weight_int8pack_mm(hidden, weight, scales)


@dataclass(frozen=True)
class Kernel:
    """One way to compute bfloat16 logits from bfloat16 hidden states, and its bound."""

    name: str
    logits: Callable[[torch.Tensor], torch.Tensor]
    bound: RoundingBound


def bfloat16_kernel(weight: torch.Tensor) -> Kernel:
    """The weight in bfloat16, packed once for oneDNN: the fastest from two rows up."""
    rounded = weight.to(torch.bfloat16)
    return Kernel(
        "bfloat16", partial(linear, packed=pack(rounded)), RoundingBound(weight, rounded.__getitem__)
    )


def int8_kernel(weight: torch.Tensor) -> Kernel:
    """The weight in int8 times a bfloat16 scale a token: a quarter of the float32 bytes.

    One row's product is a matrix-vector product bound by the bytes read: measured with
    the caches cold, 1.4 ms a pick against 2.0 ms for oneDNN's bfloat16 kernel (and 2.1 ms
    for float32). At four rows it took 2.1 ms against bfloat16's 1.3: it serves one row.
    """
    scales = (weight.abs().amax(dim=1) / 127).to(torch.bfloat16)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    quantized = torch.round(weight / scales.float().unsqueeze(1)).clamp_(-127, 127).to(torch.int8)

    def held(rows: slice) -> torch.Tensor:
        # What the kernel multiplies by, exactly: 7 bits times 8 fit float32's 24.
        return quantized[rows].float() * scales[rows].float().unsqueeze(1)

    return Kernel(
        "int8", partial(_int8_product, weight=quantized, scales=scales), RoundingBound(weight, held)
    )


class GreedyScan:
    """The greedy tokens of float32 hidden states, over one lm_head weight ([vocab, hidden])."""

    def __init__(self, weight: torch.Tensor) -> None:
        vocab, hidden_size = weight.shape
        size = block_size(vocab)
        if size is None:
            raise ValueError(f"a vocabulary of {vocab} tokens has no block size")
        self._weight = weight
        self._block = size
        self._wide = bfloat16_kernel(weight)
        self._narrow = self._wide
        try:
            self._narrow = int8_kernel(weight)
        except (RuntimeError, AttributeError) as error:  # a torch without the int8 product
            log.info("one-row greedy scans use bfloat16 weights: %s", error)
        self._max_blocks = max(1, int(vocab // size * MAX_CANDIDATE_BLOCK_SHARE))
        self._max_candidates = max(1, MAX_RECOMPUTED_BYTES // (8 * hidden_size))

    def kernel_for(self, rows: int) -> Kernel:
        return self._narrow if rows == 1 else self._wide

    def kernels_round_as_bounded(self, rows: int = PROBE_ROWS) -> bool:
        """Whether the kernels' logits of random hidden states keep to their bounds (the
        result rounded to nearest, the sums in float32), as the scan's proof assumes."""
        generator = torch.Generator().manual_seed(0)
        hidden = torch.randn(rows, self._weight.shape[1], generator=generator)
        rounded = hidden.to(torch.bfloat16)
        for kernel in {id(k): k for k in (self._wide, self._narrow)}.values():
            try:
                low = torch.cat([kernel.logits(rounded[i : i + 1]) for i in range(rows)])
                low_batched = kernel.logits(rounded)
            except RuntimeError as error:
                log.warning("the %s greedy scan cannot run here: %s", kernel.name, error)
                return False
            for logits in (low, low_batched):
                if not kernel.bound.holds(hidden, rounded, self._weight, logits):
                    log.warning("the %s greedy scan's logits exceed its bound here", kernel.name)
                    return False
        return True

    def tokens(self, hidden: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The greedy token of each row of ``hidden`` ([rows, hidden]); ``exact`` gives the
        float32 lm_head's greedy tokens of the rows the bound leaves undecided."""
        rows, vocab = hidden.shape[0], self._weight.shape[0]
        # Each piece's bfloat16 logits are a new tensor: under the size malloc recycles.
        pieces = even_pieces(rows, packed_linear.FRESH_OUTPUT_BYTES // (vocab * 2))
        if len(pieces) > 1:
            return torch.cat([self.tokens(hidden[piece], exact) for piece in pieces])
        if rows == 1:
            token = self._scan_one(hidden)
            picked = torch.tensor([0 if token is None else token])
            undecided = [0] if token is None else []
        else:
            picked, undecided = self._scan(hidden)
        decided = rows - len(undecided)
        if decided:
            _DECIDED_ROWS.inc(decided)
        if undecided:
            _FLOAT32_ROWS.inc(len(undecided))
            where = torch.tensor(undecided)
            picked[where] = exact(hidden.index_select(0, where))
        return picked

    def _scan_one(self, hidden: torch.Tensor) -> int | None:
        """``_scan`` of a lone row, its few numbers worked on the host: at one row, a step's
        time goes to small tensor operations as much as to the lm_head. None: undecided."""
        kernel, size = self._narrow, self._block
        rounded = hidden.to(torch.bfloat16)
        blocks = kernel.logits(rounded).view(-1, size).view(torch.int16)
        block_max = blocks.amax(dim=-1)
        best = _bfloat16_value(int(block_max.max()))  # the largest if >= 0 (see _scan)
        pair = torch.stack((hidden[0], rounded[0].float())).double()
        norm, rounded_norm = pair.norm(dim=1).tolist()
        absolute = kernel.bound.absolute_of(norm, rounded_norm, float((pair[1] - pair[0]).norm()))
        line = kernel.bound.line(best, absolute)
        if not (math.isfinite(line) and line > 0 and absolute < 1e37):
            return None
        # Values >= line > 0 are the bit patterns >= the smallest one at or above it.
        least = _bfloat16_bits_at_least(line)
        reaching = (block_max >= least).nonzero().flatten()
        if len(reaching) > self._max_blocks:
            return None
        found = (blocks[reaching] >= least).nonzero()
        ids = reaching[found[:, 0]] * size + found[:, 1]
        if len(ids) > self._max_candidates:
            return None
        # A product and a sum along each row, not a matrix-vector product: that may sum equal
        # rows in different orders, and their tie must stay a tie.
        logits = (self._weight[ids].double() * hidden[0].double()).sum(dim=-1)
        return int(ids[logits == logits.max()].min())  # the first of equal maxima

    def _scan(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Tokens of the rows the bound decides, and the indices of the rows it does not."""
        rows, size, vocab = hidden.shape[0], self._block, self._weight.shape[0]
        rounded = hidden.to(torch.bfloat16)
        kernel = self.kernel_for(rows)
        low, bound = kernel.logits(rounded), kernel.bound
        blocks = low.view(rows, vocab // size, size)
        # Each block's maximum, read as 16-bit integers: amax over integers is vectorised,
        # over bfloat16 it is not (6x slower). A bfloat16 bit pattern orders like the
        # integer for values >= 0; a block of negative values only gets a wrong maximum
        # below 0, which the rows this scan decides (line > 0) ignore.
        block_max = blocks.view(torch.int16).amax(dim=-1).view(torch.bfloat16).double()
        best = block_max.amax(dim=-1)
        absolute = bound.absolute(hidden, rounded)
        line = bound.line(best, absolute)
        # No overflow anywhere (|logit| <= |w|*|h|), and a line the integer maxima can serve.
        sound = torch.isfinite(line) & (line > 0) & (absolute < 1e37)
        reaching = block_max >= line.unsqueeze(1)
        sound &= reaching.sum(dim=1) <= self._max_blocks
        pairs = (reaching & sound.unsqueeze(1)).nonzero()
        values = blocks[pairs[:, 0], pairs[:, 1]]
        found = (values >= line[pairs[:, 0]].unsqueeze(1)).nonzero()
        row = pairs[found[:, 0], 0]
        ids = pairs[found[:, 0], 1] * size + found[:, 1]
        sound &= torch.bincount(row, minlength=rows) <= self._max_candidates
        keep = sound[row]
        row, ids = row[keep], ids[keep]
        logits = (self._weight[ids].double() * hidden[row].double()).sum(dim=-1)  # ties kept (_scan_one)
        top = torch.full((rows,), -torch.inf, dtype=torch.float64).scatter_reduce(0, row, logits, "amax")
        # The first of equal maxima, as argmax takes it.
        firsts = torch.where(logits == top[row], ids, vocab)
        picked = torch.full((rows,), vocab, dtype=torch.long).scatter_reduce(0, row, firsts, "amin")
        undecided = (~sound).nonzero().flatten().tolist()
        return picked, undecided


def _bfloat16_value(bits: int) -> float:
    """The value of a bfloat16 bit pattern (as a signed 16-bit integer)."""
    value: float = struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]
    return value


def _bfloat16_bits_at_least(value: float) -> int:
    """The bit pattern of the smallest bfloat16 at or above ``value`` (> 0, finite)."""
    bits: int = struct.unpack("<I", struct.pack("<f", value))[0] >> 16  # at or below it
    while _bfloat16_value(bits) < value:
        bits += 1
    return bits

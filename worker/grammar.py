"""Constrained decoding: the grammar an answer must follow, as a token mask at every step.

llguidance builds a matcher per request from a JSON schema or a Lark grammar. Its masks
are computed lazily for each step (no up-front compilation of the vocabulary, so a new
schema costs nothing before the first token), on the CPU, in microseconds, for any device
the logits live on; the library has no dependency beyond itself. The tool-call grammar is
Lark around the calls' JSON schema: ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``,
the Hermes-style block Qwen's chat template teaches the model.

JSON is generated with fixed separators (``", "`` and ``": "``, the model's own style) and
no other whitespace: a flexible-whitespace grammar lets a weak or confused model emit
whitespace until its token budget runs out.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.hf
import torch

from shared.jobs import Constraint, ToolFunction

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions
from worker.errors import InvalidRequest

JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
ANY_OBJECT: dict[str, Any] = {"type": "object"}

_BYTE_PENALTIES: dict[torch.device, torch.Tensor] = {}


def call_schema(function: ToolFunction) -> dict[str, Any]:
    """The JSON of one call of ``function``: its name, then arguments valid against its schema."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": function.name},
            "arguments": function.parameters or ANY_OBJECT,
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_lark(functions: list[ToolFunction], parallel: bool) -> str:
    calls = [call_schema(function) for function in functions]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    # A schema embedded in Lark takes its compile options from itself.
    schema = {**schema, "x-guidance": JSON_OPTIONS}
    # Parallel calls are written one per line, as the chat template renders them.
    repeat = ' ("\\n" call)*' if parallel else ""
    return (
        f"start: call{repeat}\n"
        'call: <tool_call> "\\n" arguments "\\n" </tool_call>\n'
        f"arguments: %json{json.dumps(schema)}\n"
    )


def grammar_of(constraint: Constraint) -> str:
    if constraint.kind == "tool_calls":
        return llguidance.LLMatcher.grammar_from_lark(
            tool_call_lark(constraint.functions, constraint.parallel)
        )
    schema = ANY_OBJECT if constraint.kind == "json_object" else constraint.json_schema or ANY_OBJECT
    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)


class Grammars:
    """Builds matchers for one model's tokenizer, wrapped once for llguidance.

    Wrapping takes 2-3 s, and for up to 1.5 s of it llguidance holds the GIL: on first
    use, that would stall every thread of a serving worker, its heartbeat included, long
    enough for a short lease to lapse. So the model loader wraps it (``prepare``) before
    the worker announces itself.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: frozenset[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._wrapped: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Wrap the tokenizer now (it is otherwise wrapped at the first constrained request)."""
        self._llg_tokenizer()

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._wrapped is None:
                self._wrapped = llguidance.hf.from_tokenizer(
                    self._tokenizer, n_vocab=self._vocab_size, eos_token=self._eos
                )
            return self._wrapped

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        """A fresh matcher for the constraint; InvalidRequest if its grammar cannot be built."""
        tokenizer = self._llg_tokenizer()
        try:
            grammar = grammar_of(constraint)
        except ValueError as error:
            message = f"The {constraint.param} schema is not valid: {error}"
            raise InvalidRequest(message, param=constraint.param) from error
        problem = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
        if problem:
            raise InvalidRequest(
                f"The {constraint.param} schema cannot be enforced: {problem}", param=constraint.param
            )
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(
                f"The {constraint.param} schema cannot be enforced: {matcher.get_error()}",
                param=constraint.param,
            )
        return matcher


# llguidance.torch is not imported: it compiles a kernel with torch.compile at import time,
# which loads torch's compiler stack (3.3 s of a worker's 7.5 s of imports, measured on a
# 2-core CPU), for a function the sampler does not use. The two helpers it would give are
# these, written the same way.


def new_bitmask(rows: int, vocab_size: int) -> torch.Tensor:
    """Token masks for ``rows`` rows, all tokens allowed: 32 tokens per int32 word."""
    return torch.full((rows, (vocab_size + 31) // 32), -1, dtype=torch.int32)


def fill_from_matcher(matcher: llguidance.LLMatcher, bitmask: torch.Tensor, row: int) -> None:
    """The matcher's next-token mask, written into the bitmask's row (CPU, contiguous int32)."""
    words = bitmask[row]
    assert bitmask.dtype == torch.int32 and bitmask.is_cpu and words.is_contiguous()
    matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * words.element_size())


def allow_only(bitmask: torch.Tensor, row: int, token: int) -> None:
    bitmask[row].zero_()
    word, bit = divmod(token, 32)
    # Bit 31 makes the word negative as an int32: write it as such.
    value = 1 << bit
    bitmask[row, word] = value - (1 << 32) if value >= 1 << 31 else value


def _byte_penalties(device: torch.device) -> torch.Tensor:
    """[256, 8]: for each byte of a mask, 0 for the tokens its bits allow and -inf for the others."""
    table = _BYTE_PENALTIES.get(device)
    if table is None:
        bits = (torch.arange(256).unsqueeze(-1) >> torch.arange(8)) & 1
        table = torch.zeros(256, 8).masked_fill_(bits == 0, float("-inf")).to(device)
        _BYTE_PENALTIES[device] = table
    return table


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Set the logits of the tokens a row's mask forbids to -inf, in place, for ``rows``.

    Each byte of the mask picks one row of a 256 x 8 table of 0 / -inf, which is added to
    the logits: one lookup and one addition per row (unpacking the bits with shifts costs
    about ten times as much on a CPU). The words are little-endian, so byte ``j`` of word
    ``w`` holds the bits of tokens ``32w + 8j`` to ``32w + 8j + 7``, in order.
    """
    device = logits.device
    every_row = len(rows) == logits.shape[0] and rows == list(range(len(rows)))
    words = bitmask[: len(rows)] if every_row else bitmask.index_select(0, torch.tensor(rows))
    penalties = torch.nn.functional.embedding(
        words.to(device, non_blocking=True).contiguous().view(torch.uint8).long(), _byte_penalties(device)
    ).view(len(rows), -1)[:, : logits.shape[1]]
    if every_row:
        logits.add_(penalties)
    else:
        logits.index_add_(0, torch.tensor(rows, device=device), penalties)

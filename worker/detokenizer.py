"""Turns a growing list of token ids into text pieces, one token at a time.

Decoding each token alone breaks multi-byte characters and drops the spaces that depend
on the previous token, so text is decoded over a short sliding window and a piece is only
released once it no longer ends in an incomplete character (the scheme of vLLM/TGI: the
window is the tokens of the last released piece, as context, then the pending ones).

A character takes at most four bytes, and the model's text almost never leaves more than
two tokens pending, but nothing stops a model from writing byte tokens that never form
valid UTF-8. So the pending tokens are bounded: past ``MAX_PENDING_TOKENS`` their text is
released as it decodes, replacement characters included, and the window starts afresh.
Each token then costs a bounded amount of decoding, whatever the output.

The output is a pure function of the token ids pushed: a fresh detokenizer fed the same
ids releases the same pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

INCOMPLETE_CHARACTER = "\ufffd"
MAX_PENDING_TOKENS = 8


class Decoder(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


def _fast_decode(tokenizer: object) -> Callable[[list[int]], str] | None:
    """The Rust tokenizer's own decode, where the transformers wrapper adds nothing to it.

    The wrapper's ``decode`` costs more in Python than the decoding itself, twice per
    token; with ``clean_up_tokenization_spaces`` off (Qwen's setting) it returns exactly
    what the backend's decode returns.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return None
    return partial(backend.decode, skip_special_tokens=True)


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Decoder, max_pending: int = MAX_PENDING_TOKENS) -> None:
        self._tokenizer = tokenizer
        self._fast = _fast_decode(tokenizer)
        self._max_pending = max_pending
        self._context: list[int] = []  # the tokens of the last released piece
        self._context_text = ""  # their text, decoded alone
        self._pending: list[int] = []  # tokens whose text is not released yet

    def _decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return self._fast(ids)
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self._pending.append(token_id)
        text = self._decode(self._context + self._pending)
        if len(text) > len(self._context_text) and not text.endswith(INCOMPLETE_CHARACTER):
            piece = text[len(self._context_text) :]
            self._context, self._pending = self._pending, []
            self._context_text = self._decode(self._context)
            return piece
        if len(self._pending) < self._max_pending:
            return ""
        if text.endswith(INCOMPLETE_CHARACTER):
            # Bytes that will not form a character: give up on them, as a full decode would.
            return self._restart(text)
        # Tokens that decode to nothing (skipped special tokens) change no text: drop them.
        self._pending = []
        return ""

    def flush(self) -> str:
        """Release whatever is held back, incomplete characters included."""
        if not self._pending:
            return ""
        return self._restart(self._decode(self._context + self._pending))

    def _restart(self, text: str) -> str:
        piece = text[len(self._context_text) :]
        self._context, self._context_text, self._pending = [], "", []
        return piece

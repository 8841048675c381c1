"""The text and bytes of single tokens, as OpenAI's logprobs report them."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte-to-character table (GPT-2's, which Qwen uses)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shift)
            shift += 1
    return {char: byte for byte, char in table.items()}


class TokenTexts:
    """Looks up (and remembers) each token's bytes; a token may hold part of a character."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._bytes: dict[int, bytes] = {}

    def bytes_of(self, token_id: int) -> bytes:
        known = self._bytes.get(token_id)
        if known is None:
            piece = self._tokenizer.convert_ids_to_tokens(token_id) or ""
            decoder = _byte_decoder()
            if all(char in decoder for char in piece):
                known = bytes(decoder[char] for char in piece)
            else:  # an added token written as plain text
                known = piece.encode()
            self._bytes[token_id] = known
        return known

    def entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        raw = self.bytes_of(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

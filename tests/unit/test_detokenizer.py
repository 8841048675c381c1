"""The incremental detokenizer, on the real Qwen vocabulary."""

from __future__ import annotations

from typing import Any

import pytest

from worker.detokenizer import IncrementalDetokenizer


@pytest.mark.parametrize("text", ["Hello world", "naïve café — 日本語 🙂 𠜎🫠", "  spaces\n\nand\tlines "])
def test_pieces_join_to_the_full_decode(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text)
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(token) for token in ids]
    pieces.append(detokenizer.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_multibyte_character_is_held_back_until_complete(tokenizer: Any) -> None:
    ids = tokenizer.encode("𠜎")
    assert len(ids) > 1  # an emoji spans several byte-level tokens
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(token) for token in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "𠜎"

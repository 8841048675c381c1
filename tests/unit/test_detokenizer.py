"""The incremental detokenizer and reasoning splitter, on the real Qwen vocabulary."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from tests.processes import TINY_MODEL_DIR
from worker.detokenizer import IncrementalDetokenizer
from worker.reasoning import ReasoningSplitter, TextDelta


@pytest.fixture(scope="module")
def tokenizer(tiny_model: str) -> Any:
    return AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


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


def split(tokenizer: Any, ids: list[int], in_reasoning: bool) -> tuple[str, str, int]:
    think_start, think_end = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    splitter = ReasoningSplitter(tokenizer, think_start, think_end, in_reasoning)
    deltas: list[TextDelta] = [splitter.push(token) for token in ids]
    deltas.append(splitter.flush())
    return (
        "".join(d.reasoning for d in deltas),
        "".join(d.content for d in deltas),
        splitter.reasoning_tokens,
    )


def test_reasoning_then_answer(tokenizer: Any) -> None:
    ids = tokenizer.encode("let me think</think>The answer is 4.")
    reasoning, content, reasoning_tokens = split(tokenizer, ids, in_reasoning=True)
    assert reasoning == "let me think"
    assert content == "The answer is 4."
    assert reasoning_tokens == len(tokenizer.encode("let me think")) + 1


def test_model_opening_think_itself(tokenizer: Any) -> None:
    ids = tokenizer.encode("<think>plan</think>done")
    assert split(tokenizer, ids, in_reasoning=False)[:2] == ("plan", "done")
    assert split(tokenizer, ids, in_reasoning=True)[:2] == ("plan", "done")


def test_unclosed_reasoning_is_all_reasoning(tokenizer: Any) -> None:
    ids = tokenizer.encode("still thinking")
    assert split(tokenizer, ids, in_reasoning=True) == ("still thinking", "", len(ids))

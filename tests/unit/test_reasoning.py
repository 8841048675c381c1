"""The reasoning splitter on token sequences of the real Qwen vocabulary."""

from __future__ import annotations

from typing import Any

import pytest

from worker.reasoning import ReasoningSplitter, TextDelta


def ids_of(tokenizer: Any, *pieces: str) -> list[int]:
    """Token ids of the pieces encoded one by one: each piece boundary is a token boundary."""
    return [token for piece in pieces for token in tokenizer.encode(piece)]


def new_splitter(tokenizer: Any, in_reasoning: bool) -> ReasoningSplitter:
    think_start, think_end = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    return ReasoningSplitter(tokenizer, think_start, think_end, in_reasoning)


def split(tokenizer: Any, ids: list[int], in_reasoning: bool = True) -> tuple[str, str, int]:
    splitter = new_splitter(tokenizer, in_reasoning)
    deltas: list[TextDelta] = [splitter.push(token) for token in ids]
    deltas.append(splitter.flush())
    return (
        "".join(d.reasoning for d in deltas),
        "".join(d.content for d in deltas),
        splitter.reasoning_tokens,
    )


def test_reasoning_then_answer(tokenizer: Any) -> None:
    ids = tokenizer.encode("let me think</think>The answer is 4.")
    assert tokenizer.convert_tokens_to_ids("</think>") in ids
    reasoning, content, reasoning_tokens = split(tokenizer, ids)
    assert reasoning == "let me think"
    assert content == "The answer is 4."
    assert reasoning_tokens == len(tokenizer.encode("let me think")) + 1


def test_model_opening_think_itself(tokenizer: Any) -> None:
    ids = tokenizer.encode("<think>plan</think>done")
    assert split(tokenizer, ids, in_reasoning=False) == ("plan", "done", 3)
    assert split(tokenizer, ids, in_reasoning=True) == ("plan", "done", 3)


def test_unclosed_reasoning_is_all_reasoning(tokenizer: Any) -> None:
    ids = tokenizer.encode("still thinking")
    assert split(tokenizer, ids) == ("still thinking", "", len(ids))


@pytest.mark.parametrize(
    "marker_pieces",
    [("</", "think", ">"), ("</th", "ink>"), ("<", "/", "think", ">"), ("</", "think>")],
)
def test_end_marker_spelled_with_ordinary_tokens(tokenizer: Any, marker_pieces: tuple[str, ...]) -> None:
    ids = ids_of(tokenizer, "I reason", *marker_pieces, " Answer.")
    assert tokenizer.convert_tokens_to_ids("</think>") not in ids
    reasoning, content, reasoning_tokens = split(tokenizer, ids)
    assert (reasoning, content) == ("I reason", " Answer.")
    # Every token up to the one that completes the marker is reasoning.
    assert reasoning_tokens == len(ids) - len(tokenizer.encode(" Answer."))


def test_partial_end_marker_is_never_streamed_as_reasoning(tokenizer: Any) -> None:
    splitter = new_splitter(tokenizer, in_reasoning=True)
    pieces = [splitter.push(token) for token in ids_of(tokenizer, "x", "</", "think", ">\n\n", "Hi")]
    assert [(p.reasoning, p.content) for p in pieces] == [
        ("x", ""),
        ("", ""),
        ("", ""),
        ("", "\n\n"),
        ("", "Hi"),
    ]


def test_marker_and_answer_in_one_token(tokenizer: Any) -> None:
    # ">\n\n" is one token: it completes the marker and starts the answer.
    ids = ids_of(tokenizer, "why", "</", "think", ">\n\n", "Because.")
    assert len(tokenizer.encode(">\n\n")) == 1
    assert split(tokenizer, ids)[:2] == ("why", "\n\nBecause.")


def test_text_that_only_looks_like_a_marker_start_is_released(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "a </", "thing> b")
    assert split(tokenizer, ids) == ("a </thing> b", "", len(ids))


def test_unfinished_marker_at_the_end_stays_reasoning(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "cut off </", "thi")
    assert split(tokenizer, ids)[:2] == ("cut off </thi", "")


def test_think_written_as_text_is_dropped(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "<", "think", ">", "plan", "</", "think", ">", "go")
    assert split(tokenizer, ids, in_reasoning=False)[:2] == ("plan", "go")
    assert split(tokenizer, ids, in_reasoning=True)[:2] == ("plan", "go")


def test_markers_after_the_block_are_answer_text(tokenizer: Any) -> None:
    ids = tokenizer.encode("r</think>see <think> and </think> here")
    assert split(tokenizer, ids)[:2] == ("r", "see <think> and </think> here")


def test_without_an_opened_block_text_is_the_answer(tokenizer: Any) -> None:
    ids = tokenizer.encode("Just an answer <b>.")
    assert split(tokenizer, ids, in_reasoning=False) == ("", "Just an answer <b>.", 0)


def test_multibyte_text_around_split_markers(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "日本語 🙂", "</", "think", ">", "𠜎 ok")
    assert split(tokenizer, ids)[:2] == ("日本語 🙂", "𠜎 ok")

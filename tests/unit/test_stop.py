"""The stop-string matcher, on text pieces and on real Qwen token sequences."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from worker.detokenizer import IncrementalDetokenizer
from worker.stop import Scan, StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[list[str], str | None]:
    """The emitted pieces and the stop string that ended the text, if any."""
    matcher = StopMatcher(stops)
    emitted = []
    for piece in pieces:
        scan = matcher.push(piece)
        emitted.append(scan.text)
        if scan.stop is not None:
            return emitted, scan.stop
    emitted.append(matcher.flush())
    return emitted, None


def expected_cut(stops: list[str], text: str) -> str:
    found = [text.find(stop) for stop in stops if stop in text]
    return text[: min(found)] if found else text


def test_stop_in_one_piece_cuts_before_it() -> None:
    assert StopMatcher(["END"]).push("abcENDdef") == Scan("abc", "END", "def")


def test_text_that_may_start_a_stop_is_held_then_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("go ST") == Scan("go ")
    assert matcher.push("O") == Scan("")
    assert matcher.push("RE") == Scan("STORE")


def test_held_text_is_released_at_the_end() -> None:
    assert run(["STOP"], ["a", "ST", "O"]) == (["a", "", "", "STO"], None)


def test_stop_split_over_pieces() -> None:
    assert run(["STOP"], ["xx S", "T", "OP yy"]) == (["xx ", "", ""], "STOP")


def test_earliest_stop_wins() -> None:
    assert StopMatcher(["later", "late", "ate"]).push("a plate later") == Scan("a p", "late", " later")
    assert run(["bc", "abcd"], ["ab", "cd"]) == (["", ""], "abcd")
    assert run(["bc", "abcd"], ["ab", "ce"]) == (["", "a"], "bc")


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.push("anything") == Scan("anything")
    assert matcher.flush() == ""


def test_stop_at_the_very_start() -> None:
    assert run(["\n\n"], ["\n", "\nrest"]) == (["", ""], "\n\n")


@pytest.mark.parametrize("stops", [["abcab"], ["b", "cab"], ["aab", "bca"], ["cc"]])
def test_every_way_of_splitting_the_text_gives_the_same_cut(stops: list[str]) -> None:
    text = "aabcabcab"
    for cuts in itertools.combinations(range(1, len(text)), 3):
        bounds = [0, *cuts, len(text)]
        pieces = [text[start:end] for start, end in itertools.pairwise(bounds)]
        emitted, stop = run(stops, pieces)
        assert "".join(emitted) == expected_cut(stops, text), pieces
        assert (stop is not None) == any(s in text for s in stops)


def stream_tokens(tokenizer: Any, ids: list[int], stops: list[str]) -> tuple[list[str], str | None]:
    detokenizer = IncrementalDetokenizer(tokenizer)
    return run(stops, [*(detokenizer.push(token) for token in ids), detokenizer.flush()])


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("The answer is 42. Observation: done", "Observation:"),
        ("first line\n\nsecond paragraph", "\n\n"),
        ("count: one two three four", "o thr"),  # starts and ends inside tokens
        ("emoji 🙂 then 𠜎 more", "𠜎"),  # a character spread over several byte tokens
        ("```python\nprint(1)\n```\nafter", "```\n"),
    ],
)
def test_stop_on_real_tokens(tokenizer: Any, text: str, stop: str) -> None:
    ids = tokenizer.encode(text)
    emitted, found = stream_tokens(tokenizer, ids, [stop])
    assert found == stop
    assert "".join(emitted) == text[: text.index(stop)]
    assert not any(stop in piece for piece in emitted)


def test_stop_spanning_token_boundaries(tokenizer: Any) -> None:
    ids = tokenizer.encode("alpha beta gamma delta")
    pieces = [tokenizer.decode([token]) for token in ids]
    assert pieces[1:3] == [" beta", " gamma"]
    stop = "ta gam"  # the end of one token and the start of the next
    emitted, found = stream_tokens(tokenizer, ids, [stop])
    assert (found, "".join(emitted)) == (stop, "alpha be")


def test_no_stop_in_the_text_leaves_it_whole(tokenizer: Any) -> None:
    text = "nothing to see here"
    emitted, found = stream_tokens(tokenizer, tokenizer.encode(text), ["here!", "zz"])
    assert (found, "".join(emitted)) == (None, text)

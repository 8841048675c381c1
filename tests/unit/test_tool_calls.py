from __future__ import annotations

import json

import pytest

from worker.tool_calls import ParsedCall, ToolCallExtractor, call_id

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def run(pieces: list[str]) -> tuple[str, list[ParsedCall]]:
    extractor = ToolCallExtractor("session:0")
    text, calls = [], []
    for piece in pieces:
        emitted, found = extractor.push(piece)
        text.append(emitted)
        calls.extend(found)
    text.append(extractor.flush())
    return "".join(text), calls


def pieces_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_a_call_becomes_a_call_in_pieces_of_any_size(size: int) -> None:
    text, calls = run(pieces_of("\n\n" + CALL + "\n" + CALL.replace("Paris", "Rome") + "\n", size))
    assert text == ""  # only whitespace around the calls: no answer text
    assert [(c.index, c.name, json.loads(c.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_weather", {"city": "Rome"}),
    ]
    assert [c.id for c in calls] == [call_id("session:0", 0), call_id("session:0", 1)]
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")


def test_text_around_a_call_stays_text() -> None:
    text, calls = run(pieces_of("Let me check. " + CALL + " Done.", 4))
    assert text == "Let me check.  Done."
    assert len(calls) == 1


def test_a_block_that_is_not_json_stays_text() -> None:
    broken = "<tool_call>\n{not json}\n</tool_call>"
    text, calls = run(pieces_of(broken, 5))
    assert text == broken and calls == []


def test_an_unclosed_block_is_released_as_text_at_the_end() -> None:
    text, calls = run(["Hi ", '<tool_call>\n{"name": "f", "argu'])
    assert text == 'Hi <tool_call>\n{"name": "f", "argu' and calls == []


def test_an_answer_of_whitespace_alone_is_kept() -> None:
    assert run(["\n\n"]) == ("\n\n", [])


def test_string_arguments_are_passed_as_they_are() -> None:
    _, calls = run(['<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'])
    assert calls[0].arguments == '{"a": 1}'

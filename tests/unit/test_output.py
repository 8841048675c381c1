"""Reasoning split and stop strings together, on real Qwen token sequences."""

from __future__ import annotations

from typing import Any

from tests.unit.test_reasoning import ids_of, new_splitter
from worker.output import OutputParser
from worker.reasoning import TextDelta


def parse(tokenizer: Any, ids: list[int], stops: list[str]) -> tuple[str, str, OutputParser, list[TextDelta]]:
    parser = OutputParser(new_splitter(tokenizer, in_reasoning=True), stops)
    deltas = []
    for token in ids:
        deltas.append(parser.push(token))
        if parser.stopped:
            break
    deltas.append(parser.flush())
    reasoning = "".join(d.reasoning for d in deltas)
    content = "".join(d.content for d in deltas)
    return reasoning, content, parser, deltas


def test_stop_applies_to_the_answer_only(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "a\n\nplan\n\n", "</think>", "first\n\nsecond")
    reasoning, content, parser, _ = parse(tokenizer, ids, ["\n\n"])
    assert (reasoning, content) == ("a\n\nplan\n\n", "first")
    assert parser.stopped_on == "\n\n"


def test_stop_split_over_tokens_after_a_split_end_marker(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "think", "</", "think", ">", "Answer: 4", "\n", "Observ", "ation", ": more")
    reasoning, content, parser, deltas = parse(tokenizer, ids, ["Observation:"])
    assert (reasoning, content, parser.stopped_on) == ("think", "Answer: 4\n", "Observation:")
    assert not any("Obs" in delta.content for delta in deltas)


def test_stop_right_after_the_block(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "r", "</think>", "STOP", "never")
    assert parse(tokenizer, ids, ["STOP"])[:2] == ("r", "")


def test_partial_stop_is_released_when_the_output_ends(tokenizer: Any) -> None:
    ids = ids_of(tokenizer, "r", "</think>", "ends with Obs")
    reasoning, content, parser, _ = parse(tokenizer, ids, ["Observation:"])
    assert (reasoning, content, parser.stopped) == ("r", "ends with Obs", False)


def test_unclosed_reasoning_ignores_stops(tokenizer: Any) -> None:
    ids = tokenizer.encode("STOP inside the thinking")
    reasoning, content, parser, _ = parse(tokenizer, ids, ["STOP"])
    assert (reasoning, content, parser.stopped) == ("STOP inside the thinking", "", False)
    assert parser.reasoning_tokens == len(ids)


def joined(deltas: list[TextDelta]) -> TextDelta:
    return sum(deltas, TextDelta())


def test_a_parser_rebuilt_from_the_first_tokens_continues_the_same(tokenizer: Any) -> None:
    """What a sequence resumed at token i relies on, for every i."""
    lone_byte = tokenizer.convert_tokens_to_ids(chr(0xA5))  # never forms a character
    ids = ids_of(tokenizer, "plan 日本 🙂", "</", "think", ">", "Answer: ", "𠜎 ok\n", "Obs")
    ids += [lone_byte] * 12 + ids_of(tokenizer, "ervation", "Observ", "ation: never sent")

    def new_parser() -> OutputParser:
        return OutputParser(new_splitter(tokenizer, in_reasoning=True), ["Observation:"])

    original = new_parser()
    deltas = [original.push(token) for token in ids]
    end = original.flush()
    assert original.stopped_on == "Observation:"
    assert joined(deltas).reasoning == "plan 日本 🙂"
    assert joined(deltas).content.startswith("Answer: 𠜎 ok\nObs\ufffd")
    assert new_parser().push_many(ids) == joined(deltas)
    for index in range(len(ids) + 1):
        resumed = new_parser()
        assert resumed.push_many(ids[:index]) == joined(deltas[:index])
        assert [resumed.push(token) for token in ids[index:]] == deltas[index:]
        assert resumed.flush() == end
        assert (resumed.stopped_on, resumed.reasoning_tokens) == (
            original.stopped_on,
            original.reasoning_tokens,
        )

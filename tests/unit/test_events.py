from __future__ import annotations

import json

import pytest

from shared.events import (
    ChunkWriter,
    SessionStatus,
    entry_id_after,
    format_event_id,
    index_of_entry,
    parse_event_id,
    usage_of,
)


def test_entry_ids_map_to_indexes_from_zero() -> None:
    assert index_of_entry("0-1") == 0
    assert index_of_entry("0-42") == 41
    assert entry_id_after(-1) == "0-0"
    assert entry_id_after(41) == "0-42"


@pytest.mark.parametrize("session_id", ["abc", "chatcmpl-x_y.z", "with:colon"])
def test_event_ids_round_trip(session_id: str) -> None:
    assert parse_event_id(format_event_id(session_id, 7)) == (session_id, 7)


@pytest.mark.parametrize("bad", ["", "abc", "abc:", ":3", "abc:-1", "abc:x"])
def test_malformed_event_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_event_id(bad)


def test_chunks_have_the_openai_shape() -> None:
    chunks = ChunkWriter("s1", "model-x", 123)
    role = json.loads(chunks.role())
    assert role["id"] == "s1" and role["object"] == "chat.completion.chunk"
    assert role["created"] == 123 and role["model"] == "model-x"
    assert role["choices"][0]["delta"]["role"] == "assistant"
    delta = json.loads(chunks.delta(content="hi", reasoning="hmm"))["choices"][0]["delta"]
    assert delta == {"reasoning_content": "hmm", "reasoning": "hmm", "content": "hi"}
    finish = json.loads(chunks.finish("cancelled"))["choices"][0]
    assert finish["finish_reason"] == "cancelled" and finish["delta"] == {}
    second = json.loads(chunks.for_choice(2).tool_call_start(0, "call_x", "f"))["choices"][0]
    assert second["index"] == 2
    assert second["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_x", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]
    usage = json.loads(chunks.usage(usage_of(3, 4, 2)))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7
    assert usage["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}


def test_terminal_statuses() -> None:
    assert {s for s in SessionStatus if s.is_terminal} == {
        SessionStatus.FINISHED,
        SessionStatus.CANCELLED,
        SessionStatus.FAILED,
    }

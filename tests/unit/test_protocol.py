from __future__ import annotations

import pytest

from api.errors import BadRequest
from api.media_parts import MediaLimits
from api.protocol import ChatCompletionRequest, to_messages, to_sampling
from shared.jobs import TextPart

LIMITS = MediaLimits(max_items=4, max_image_bytes=1000, max_video_bytes=2000)


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_string_and_part_contents_become_text_parts() -> None:
    parsed = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        }
    )
    messages, inline = to_messages(parsed, LIMITS)
    assert inline == []
    assert [m.role for m in messages] == ["system", "user"]
    assert [p.text for p in messages[1].content if isinstance(p, TextPart)] == ["a", "b"]


def test_sampling_defaults_and_precedence() -> None:
    sampling = to_sampling(request(), default_max_tokens=256, default_temperature=0.7)
    assert sampling.max_new_tokens == 256 and sampling.temperature == 0.7
    assert sampling.top_p is None and sampling.top_k is None
    both = to_sampling(request(max_tokens=10, max_completion_tokens=20, temperature=0), 256, 0.7)
    assert both.max_new_tokens == 20 and both.temperature == 0


@pytest.mark.parametrize(
    "field", [{"stop": "x"}, {"response_format": {"type": "json_object"}}, {"tool_choice": "auto"}]
)
def test_unsupported_fields_are_named(field: dict[str, object]) -> None:
    with pytest.raises(BadRequest) as raised:
        request(**field)
    assert raised.value.param == next(iter(field))


@pytest.mark.parametrize(
    "field",
    [{"logprobs": False}, {"presence_penalty": 0}, {"response_format": {"type": "text"}}, {"user": "x"}],
)
def test_neutral_or_unknown_fields_pass(field: dict[str, object]) -> None:
    request(**field)

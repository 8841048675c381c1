"""The completion budget: how max_tokens meets the room the prompt leaves in the context."""

from __future__ import annotations

import pytest

from shared.jobs import SamplingParams
from worker.errors import InvalidRequest
from worker.verdict import completion_budget


def asked(max_new_tokens: int, param: str | None) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, max_tokens_param=param)


def test_a_budget_that_fits_is_kept() -> None:
    assert completion_budget(100, 90, asked(10, "max_tokens")) == 10
    assert completion_budget(100, 10, asked(10, None)) == 10


def test_the_default_budget_shrinks_to_the_room_left() -> None:
    assert completion_budget(100, 97, asked(256, None)) == 3


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_an_asked_budget_that_does_not_fit_is_refused_with_the_counts(param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        completion_budget(100, 97, asked(4, param))
    assert raised.value.param == param
    assert "maximum context length is 100 tokens" in str(raised.value)
    assert "requested 101 tokens (97 in the messages, 4 in the completion)" in str(raised.value)


@pytest.mark.parametrize("prompt_tokens", [100, 150])
def test_a_prompt_that_fills_the_context_is_refused(prompt_tokens: int) -> None:
    with pytest.raises(InvalidRequest) as raised:
        completion_budget(100, prompt_tokens, asked(1, None))
    assert raised.value.param == "messages" and f"the prompt has {prompt_tokens} tokens" in str(raised.value)

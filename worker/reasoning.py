"""Splits generated tokens into reasoning (inside <think>...</think>) and answer text."""

from __future__ import annotations

from dataclasses import dataclass

from worker.detokenizer import Decoder, IncrementalDetokenizer


@dataclass(frozen=True)
class TextDelta:
    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)


class ReasoningSplitter:
    """Routes each token to the reasoning or the answer channel.

    The Thinking model's chat template opens ``<think>`` in the prompt, so generation
    starts inside the reasoning block when the prompt ends that way.
    """

    def __init__(
        self, tokenizer: Decoder, think_start_id: int, think_end_id: int, in_reasoning: bool
    ) -> None:
        self._tokenizer = tokenizer
        self._start_id = think_start_id
        self._end_id = think_end_id
        self.in_reasoning = in_reasoning
        self.reasoning_tokens = 0
        self._detokenizer = IncrementalDetokenizer(tokenizer)

    def _switch(self, in_reasoning: bool) -> TextDelta:
        held_back = self._wrap(self._detokenizer.flush())
        self.in_reasoning = in_reasoning
        self._detokenizer = IncrementalDetokenizer(self._tokenizer)
        return held_back

    def _wrap(self, text: str) -> TextDelta:
        return TextDelta(reasoning=text) if self.in_reasoning else TextDelta(content=text)

    def push(self, token_id: int) -> TextDelta:
        if token_id == self._start_id:
            self.reasoning_tokens += 1
            return self._switch(True)
        if token_id == self._end_id:
            self.reasoning_tokens += int(self.in_reasoning)
            return self._switch(False)
        self.reasoning_tokens += int(self.in_reasoning)
        return self._wrap(self._detokenizer.push(token_id))

    def flush(self) -> TextDelta:
        return self._wrap(self._detokenizer.flush())

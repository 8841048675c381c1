"""Splits generated tokens into reasoning (inside <think>...</think>) and answer text.

Like vLLM's reasoning parsers, the output has one thinking block: everything before
``</think>`` is reasoning and everything after it is the answer. The Thinking model's chat
template opens ``<think>`` in the prompt, so generation usually starts inside the block;
a ``<think>`` the model writes itself is dropped, and an output that never closes the
block is reasoning throughout. The markers are recognised as their single special tokens
and also as plain text, since the model may spell ``</think>`` with several ordinary
tokens ("</", "think", ">"): text that could be the start of a marker is held back until
it is known not to be one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from worker.detokenizer import Decoder, IncrementalDetokenizer
from worker.stop import StopMatcher
from worker.tool_calls import ParsedCall

THINK_START = "<think>"
THINK_END = "</think>"


@dataclass(frozen=True)
class TextDelta:
    reasoning: str = ""
    content: str = ""
    tool_calls: tuple[ParsedCall, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)

    def __add__(self, other: TextDelta) -> TextDelta:
        return TextDelta(
            self.reasoning + other.reasoning,
            self.content + other.content,
            self.tool_calls + other.tool_calls,
        )


class Phase(Enum):
    BEFORE = "before"  # no thinking block yet: answer text, but the model may still open one
    REASONING = "reasoning"
    ANSWER = "answer"  # the block was closed: everything from here on is answer text


# The markers each phase watches for, and the phase each leads to. A <think> inside the
# block is only dropped; once the block is closed the markers are ordinary answer text.
TRANSITIONS: dict[Phase, dict[str, Phase]] = {
    Phase.BEFORE: {THINK_START: Phase.REASONING, THINK_END: Phase.ANSWER},
    Phase.REASONING: {THINK_START: Phase.REASONING, THINK_END: Phase.ANSWER},
    Phase.ANSWER: {},
}


class ReasoningSplitter:
    """Routes one sequence's tokens to the reasoning or the answer channel."""

    def __init__(
        self, tokenizer: Decoder, think_start_id: int, think_end_id: int, in_reasoning: bool
    ) -> None:
        self._tokenizer = tokenizer
        self._marker_ids = {think_start_id: THINK_START, think_end_id: THINK_END}
        self.reasoning_tokens = 0
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._enter(Phase.REASONING if in_reasoning else Phase.BEFORE)

    @property
    def in_reasoning(self) -> bool:
        return self.phase is Phase.REASONING

    def push(self, token_id: int) -> TextDelta:
        """Add one generated token; return the text it releases on each channel."""
        arrived_in = self.phase
        marker = self._marker_ids.get(token_id)
        if marker is not None and marker in TRANSITIONS[self.phase]:
            delta = self._release_held()
            self._detokenizer = IncrementalDetokenizer(self._tokenizer)
            # Released text may itself have closed the block; then the marker changes nothing.
            self._enter(TRANSITIONS[self.phase].get(marker, self.phase))
        else:
            delta = self._route(self._detokenizer.push(token_id))
        # A token counts as reasoning when it arrives inside the block or opens it; so the
        # closing marker counts, as the opening one does.
        if Phase.REASONING in (arrived_in, self.phase):
            self.reasoning_tokens += 1
        return delta

    def flush(self) -> TextDelta:
        """The output ended: release everything held back, where it belongs."""
        return self._release_held()

    def _release_held(self) -> TextDelta:
        delta = self._route(self._detokenizer.flush())
        return delta + self._wrap(self._markers.flush())

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self._markers = StopMatcher(TRANSITIONS[phase])

    def _wrap(self, text: str) -> TextDelta:
        return TextDelta(reasoning=text) if self.phase is Phase.REASONING else TextDelta(content=text)

    def _route(self, text: str) -> TextDelta:
        delta = TextDelta()
        while text:
            scan = self._markers.push(text)
            delta += self._wrap(scan.text)
            if scan.stop is None:
                break
            self._enter(TRANSITIONS[self.phase][scan.stop])
            text = scan.rest
        return delta

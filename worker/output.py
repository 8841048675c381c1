"""Turns one sequence's generated tokens into what its client sees, step by step.

The reasoning splitter separates thinking from the answer, then the stop strings are
matched on the answer only: a thinking model's reasoning freely contains the strings a
client stops its answer on ("\n\n", "Observation:", a code fence), and stopping there
would leave no answer at all. (vLLM matches stop strings on the whole output; this is a
deliberate difference.) Pure logic, one instance per sequence, so that a batching decode
loop can keep one per row.

Its state is a function of the token ids pushed (given the tokenizer, the stop strings and
whether the prompt opened the thinking block): a fresh parser fed a sequence's first
``i`` tokens holds back the same text and continues with the same deltas as the parser
that saw them one step at a time. A sequence resumed at token ``i`` rebuilds its parser
that way (``push_many``), dropping the text it returns, which was already emitted.
"""

from __future__ import annotations

from worker.reasoning import Phase, ReasoningSplitter, TextDelta
from worker.stop import StopMatcher
from worker.tool_calls import ToolCallExtractor


class OutputParser:
    def __init__(
        self, splitter: ReasoningSplitter, stops: list[str], tool_calls: ToolCallExtractor | None = None
    ) -> None:
        self._splitter = splitter
        self._stops = StopMatcher(stops)
        # Tool calls are taken out of the answer before stop strings are looked for.
        self._tools = tool_calls
        self.stopped_on: str | None = None  # the stop string that ended the answer

    @property
    def in_reasoning(self) -> bool:
        return self._splitter.in_reasoning

    @property
    def in_answer(self) -> bool:
        """Whether the next token belongs to the answer (the thinking block is closed, or none opened)."""
        return self._splitter.phase is not Phase.REASONING

    @property
    def made_tool_calls(self) -> bool:
        return bool(self._tools and self._tools.calls)

    @property
    def reasoning_tokens(self) -> int:
        return self._splitter.reasoning_tokens

    @property
    def stopped(self) -> bool:
        return self.stopped_on is not None

    def push(self, token_id: int) -> TextDelta:
        """Add one generated token; after a stop string nothing more is emitted."""
        if self.stopped:
            return TextDelta()
        return self._cut(self._splitter.push(token_id))

    def push_many(self, token_ids: list[int]) -> TextDelta:
        """Add several tokens: the text pushing them one by one would release, joined."""
        delta = TextDelta()
        for token_id in token_ids:
            if self.stopped:
                break
            delta += self.push(token_id)
        return delta

    def flush(self) -> TextDelta:
        """The output ended: release what is held back (a partial stop string included)."""
        if self.stopped:
            return TextDelta()
        delta = self._cut(self._splitter.flush())
        if self.stopped or self._tools is None:
            return delta if self.stopped else delta + TextDelta(content=self._stops.flush())
        delta += self._scan_stops(self._tools.flush())
        if self.stopped:
            return delta
        return delta + TextDelta(content=self._stops.flush())

    def _cut(self, delta: TextDelta) -> TextDelta:
        if not delta.content:
            return delta
        if self._tools is None:
            return TextDelta(delta.reasoning) + self._scan_stops(delta.content)
        text, calls = self._tools.push(delta.content)
        return TextDelta(delta.reasoning, tool_calls=tuple(calls)) + self._scan_stops(text)

    def _scan_stops(self, text: str) -> TextDelta:
        if not text:
            return TextDelta()
        scan = self._stops.push(text)
        self.stopped_on = scan.stop
        return TextDelta(content=scan.text)

"""One request being decoded: its sampling, its text output and how it ends."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from shared.events import ChunkWriter, SessionStatus, usage_of
from shared.responses import ResponseEvents
from worker.output import OutputParser
from worker.reasoning import TextDelta
from worker.sampler import RowSampling, TokenLogprobs
from worker.session_writer import SessionWriter
from worker.steering import Steering
from worker.token_text import TokenTexts


@dataclass
class Outcome:
    status: SessionStatus
    finish_reason: str
    usage: dict[str, Any]


def combined(outcomes: list[Outcome]) -> Outcome:
    """The session's outcome from its choices': the prompt counted once, completions summed."""
    if len(outcomes) == 1:
        return outcomes[0]
    first = outcomes[0].usage
    completion = sum(o.usage["completion_tokens"] for o in outcomes)
    reasoning = sum(o.usage["completion_tokens_details"]["reasoning_tokens"] for o in outcomes)
    cancelled = any(o.status is SessionStatus.CANCELLED for o in outcomes)
    status = SessionStatus.CANCELLED if cancelled else SessionStatus.FINISHED
    reason = "cancelled" if cancelled else outcomes[0].finish_reason
    return Outcome(status, reason, usage_of(first["prompt_tokens"], completion, reasoning))


class Sequence:
    """Owned by the engine thread while it decodes; the job's thread waits on ``done``."""

    def __init__(
        self,
        inputs: Any,
        prompt_tokens: int,
        max_new_tokens: int,
        sampling: RowSampling,
        parser: OutputParser,
        writer: SessionWriter,
        eos_token_ids: frozenset[int],
        steering: Steering | None = None,
        token_texts: TokenTexts | None = None,
        top_logprobs: int = 0,
        index: int = 0,
    ) -> None:
        self.inputs = inputs
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.writer = writer
        self.steering = steering
        self.index = index  # the choice this sequence is, among the request's n
        self.chunks: ChunkWriter | ResponseEvents = writer.chunks.for_choice(index)
        self._parser = parser
        self._eos = eos_token_ids
        # Log probabilities of answer tokens: asked for when token_texts is given.
        self._token_texts = token_texts
        self.top_logprobs = top_logprobs
        self._pending_logprobs: list[dict[str, Any]] = []
        self.generated: list[int] = []
        self.first_token_at: float | None = None  # time.monotonic() of the first token
        self.next_position = 0
        self.slot = -1  # its row in the engine's batch, once it has joined
        self.finish_reason: str | None = None
        # Set by the engine when the sequence leaves it without an end of its own: the
        # session was lost to this worker, or the worker is shutting down and hands it over.
        self.interrupted: str | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.interrupted is not None

    @property
    def reserved_tokens(self) -> int:
        """The most tokens this sequence can hold in the KV cache: prompt and whole budget."""
        return self.prompt_tokens + self.max_new_tokens

    @property
    def last_token(self) -> int:
        return self.generated[-1]

    @property
    def parser(self) -> OutputParser:
        return self._parser

    @property
    def wants_logprobs(self) -> bool:
        """Whether the next token's log probability is reported: an answer token, not forced."""
        steered = self.steering is not None and self.steering.forced()
        return self._token_texts is not None and self._parser.in_answer and not steered

    @property
    def plain_greedy(self) -> bool:
        """Whether its next token is the argmax of the bare logits: greedy, with nothing that
        moves or masks the logits and no log probabilities to report."""
        sampling = self.sampling
        return (
            sampling.greedy
            and not sampling.penalised
            and not sampling.logit_bias
            and self.steering is None
            and not self.wants_logprobs
        )

    def begin(self) -> None:
        """Before the first token (or the replay of earlier ones)."""
        if self.steering is not None:
            self.steering.start(self._parser)

    def accept(self, token: int, logprobs: TokenLogprobs | None = None) -> None:
        """Take the token sampled for this sequence and queue the text it completes."""
        self.generated.append(token)
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.writer.add_token(token, self.index)
        forced = self.steering.take(token, self._parser) if self.steering is not None else False
        if token in self._eos:
            self.finish_reason = "stop"
            return
        if logprobs is not None and self._token_texts is not None and not forced:
            self._record_logprobs(token, logprobs)
        was_reasoning = self._parser.in_reasoning
        # A forced blank line between the thinking and the answer is not answer text.
        delta = TextDelta() if forced and self._parser.in_answer else self._parser.push(token)
        if self.steering is not None:
            self.steering.after(self._parser, closed_thinking=was_reasoning and self._parser.in_answer)
        self._emit(delta)
        if self._parser.stopped:  # the answer reached a stop string
            self.finish_reason = "stop"
        elif len(self.generated) >= self.max_new_tokens:
            self.finish_reason = "length"

    def _record_logprobs(self, token: int, logprobs: TokenLogprobs) -> None:
        assert self._token_texts is not None
        entry = self._token_texts.entry(token, logprobs.logprob)
        entry["top_logprobs"] = [self._token_texts.entry(other, value) for other, value in logprobs.top]
        self._pending_logprobs.append(entry)

    def _emit(self, delta: TextDelta, final: bool = False) -> None:
        """Queue the chunks of a delta; log probabilities ride with the next answer text."""
        logprobs = None
        if self._pending_logprobs and (delta.content or delta.tool_calls or final):
            logprobs, self._pending_logprobs = self._pending_logprobs, []
        if delta.reasoning or delta.content or logprobs:
            self.writer.emit(self.chunks.delta(delta.content, delta.reasoning, logprobs))
        for call in delta.tool_calls:
            self.writer.emit(self.chunks.tool_call_start(call.index, call.id, call.name))
            self.writer.emit(self.chunks.tool_call_arguments(call.index, call.arguments))

    def cancel(self) -> None:
        self.finish_reason = "cancelled"

    def interrupt(self, why: str) -> None:
        self.interrupted = why
        self.done.set()

    def outcome(self) -> Outcome:
        self._emit(self._parser.flush(), final=True)
        usage = usage_of(self.prompt_tokens, len(self.generated), self._parser.reasoning_tokens)
        reason = self.finish_reason or "stop"
        if reason == "stop" and self._parser.made_tool_calls:
            reason = "tool_calls"
        status = SessionStatus.CANCELLED if reason == "cancelled" else SessionStatus.FINISHED
        return Outcome(status, reason, usage)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

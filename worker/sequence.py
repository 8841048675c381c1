"""One request being decoded: its sampling, its text output and how it ends."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from shared.events import SessionStatus, usage_of
from worker.output import OutputParser
from worker.sampler import RowSampling
from worker.session_writer import SessionWriter


@dataclass
class Outcome:
    status: SessionStatus
    finish_reason: str
    usage: dict[str, Any]


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
    ) -> None:
        self.inputs = inputs
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.writer = writer
        self._parser = parser
        self._eos = eos_token_ids
        self.generated: list[int] = []
        self.next_position = 0
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

    def accept(self, token: int) -> None:
        """Take the token sampled for this sequence and queue the text it completes."""
        self.generated.append(token)
        self.writer.add_token(token)
        if token in self._eos:
            self.finish_reason = "stop"
            return
        delta = self._parser.push(token)
        if delta:
            self.writer.emit(self.writer.chunks.delta(delta.content, delta.reasoning))
        if self._parser.stopped:  # the answer reached a stop string
            self.finish_reason = "stop"
        elif len(self.generated) >= self.max_new_tokens:
            self.finish_reason = "length"

    def replay(self, tokens: tuple[int, ...]) -> None:
        """Take over a session: accept the tokens an earlier attempt generated, in order.

        The parser (reasoning split, stop strings, detokenizer) is a pure function of the
        tokens, so this rebuilds exactly the events the earlier attempt wrote, and leaves
        the parser in the state it had after them.
        """
        for position, token in enumerate(tokens):
            if self.finished:
                raise ValueError(f"the stored output ended at token {position} of {len(tokens)}")
            self.accept(token)

    def cancel(self) -> None:
        self.finish_reason = "cancelled"

    def interrupt(self, why: str) -> None:
        self.interrupted = why
        self.done.set()

    def outcome(self) -> Outcome:
        held_back = self._parser.flush()
        if held_back:
            self.writer.emit(self.writer.chunks.delta(held_back.content, held_back.reasoning))
        usage = usage_of(self.prompt_tokens, len(self.generated), self._parser.reasoning_tokens)
        reason = self.finish_reason or "stop"
        status = SessionStatus.CANCELLED if reason == "cancelled" else SessionStatus.FINISHED
        return Outcome(status, reason, usage)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

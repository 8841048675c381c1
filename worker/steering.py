"""Which tokens a sequence may take next: forced ones, or those its grammar allows.

Two rules steer a sequence, both applied as a token mask before sampling, so a steered
row decodes in the same batched step as free ones:

- the thinking budget: once a sequence has written its budget of reasoning tokens, the
  end of thinking is forced (after a short closing sentence when the budget was not 0),
  followed by the blank line the chat template puts before an answer;
- the constraint: once the answer starts, its grammar (JSON, a schema, tool calls)
  allows only the tokens that keep it valid, then only the end of the sequence. The
  reasoning stays free.

Its state is a function of the tokens taken (like the output parser's), so a sequence
resumed after a failover rebuilds it by taking the same tokens again.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import llguidance
import torch

from worker.grammar import allow_only, fill_from_matcher
from worker.output import OutputParser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThinkingEnd:
    """The tokens that end a thinking block by force (tokenised once per model)."""

    closing: tuple[int, ...]  # the closing sentence, written inside the block
    end: tuple[int, ...]  # "</think>" and the blank line before the answer
    separator: tuple[int, ...]  # the blank line alone


class Steering:
    def __init__(
        self,
        thinking_end: ThinkingEnd,
        budget: int | None,
        matcher: llguidance.LLMatcher | None,
        eos_token: int,
    ) -> None:
        self._thinking_end = thinking_end
        self._budget = budget
        self._matcher = matcher
        self._eos = eos_token
        self._forced: deque[int] = deque()
        self._budget_spent = False

    @property
    def constrained(self) -> bool:
        return self._matcher is not None

    def start(self, parser: OutputParser) -> None:
        """Before the first token: a budget of 0 ends the thinking block at once."""
        self._check_budget(parser)

    def restrict(self, bitmask: torch.Tensor, row: int, parser: OutputParser) -> bool:
        """Write this sequence's mask into ``bitmask[row]``; false if every token is allowed."""
        if self._forced:
            allow_only(bitmask, row, self._forced[0])
            return True
        if self._matcher is None or not parser.in_answer:
            return False
        if self._matcher.is_error():
            allow_only(bitmask, row, self._eos)
        else:
            fill_from_matcher(self._matcher, bitmask, row)
        return True

    def forced(self) -> bool:
        """Whether the next token is forced (no sampling choice, no log probability)."""
        return bool(self._forced)

    def take(self, token: int, parser: OutputParser) -> bool:
        """Advance by the token about to be pushed to ``parser``; true if it was forced.

        Call before the parser takes the token: the grammar sees only answer tokens.
        """
        if self._forced:
            expected = self._forced.popleft()
            if token != expected:  # only when a mask was not applied; keep the record straight
                log.warning("forced token %d was replaced by %d", expected, token)
            return True
        matcher = self._matcher
        if (
            matcher is not None
            and parser.in_answer
            and not matcher.is_error()
            and not matcher.consume_token(token)
        ):
            log.warning("token %d broke the grammar: %s", token, matcher.get_error())
        return False

    def after(self, parser: OutputParser, closed_thinking: bool) -> None:
        """After the parser took a token: apply the budget, or separate the answer to come."""
        if closed_thinking and self._matcher is not None and not self._forced:
            # The model closed the block itself: the grammar starts after the blank line.
            self._forced.extend(self._thinking_end.separator)
        self._check_budget(parser)

    def _check_budget(self, parser: OutputParser) -> None:
        if self._budget is None or self._budget_spent or not parser.in_reasoning:
            return
        if parser.reasoning_tokens >= self._budget:
            self._budget_spent = True
            if self._budget > 0:
                self._forced.extend(self._thinking_end.closing)
            self._forced.extend(self._thinking_end.end)

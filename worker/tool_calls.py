"""Finds Hermes-style tool calls in an answer that arrives in pieces.

Qwen's chat template teaches the model to call a tool by writing, in its answer,
``<tool_call>\n{"name": "...", "arguments": {...}}\n</tool_call>``. The text outside such
blocks stays answer text; a complete block whose JSON names a function becomes a call.
A block that is not valid JSON, or never closes, is passed on as the text it was, so
nothing the model wrote is lost. Whitespace around calls (the line breaks between them)
is dropped, so an answer that is only calls has no text. Like the output parser it
serves, this is a pure function of the text pushed, so a resumed session rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from worker.stop import StopMatcher

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"


@dataclass(frozen=True)
class ParsedCall:
    index: int  # among the calls of this answer
    id: str
    name: str
    arguments: str  # a JSON text


def call_id(seed: str, index: int) -> str:
    """A call id that a resumed session gives the same call again."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=12).hexdigest()
    return f"call_{digest}"


class ToolCallExtractor:
    def __init__(self, id_seed: str) -> None:
        self._id_seed = id_seed
        self._start = StopMatcher([CALL_START])
        self._block: str | None = None  # the text of the open block, once one started
        self._spaces = ""  # whitespace held back: it is dropped if a call follows it
        self._only_spaces = True  # no text since the start of the answer or the last call
        self.calls: list[ParsedCall] = []

    def push(self, text: str) -> tuple[str, list[ParsedCall]]:
        """Text to emit as answer, and the calls completed by this piece."""
        emitted: list[str] = []
        calls: list[ParsedCall] = []
        while text:
            if self._block is None:
                scan = self._start.push(text)
                emitted.append(self._outside(scan.text))
                if scan.stop is None:
                    break
                self._spaces = ""  # whitespace before a call is dropped
                self._block = ""
                text = scan.rest
            else:
                self._block += text
                text = ""
                end = self._block.find(CALL_END)
                if end < 0:
                    break
                body, text = self._block[:end], self._block[end + len(CALL_END) :]
                self._block = None
                call = self._parse(body)
                if call is None:
                    emitted.append(self._outside(CALL_START + body + CALL_END))
                else:
                    calls.append(call)
                    self.calls.append(call)
                    self._only_spaces = True
        return "".join(emitted), calls

    def flush(self) -> str:
        """The answer ended: text still held back (an unclosed block is returned as text)."""
        rest = self._start.flush()
        if self._block is not None:
            rest += CALL_START + self._block
            self._block = None
        text = self._outside(rest)
        if not self.calls:  # an answer of whitespace alone keeps it
            text, self._spaces = self._spaces + text, ""
        return text

    def _outside(self, text: str) -> str:
        if not self._only_spaces:
            return text
        if not text.strip():
            self._spaces += text
            return ""
        self._only_spaces = False
        text, self._spaces = self._spaces + text, ""
        return text

    def _parse(self, body: str) -> ParsedCall | None:
        try:
            call = json.loads(body)
        except ValueError:
            return None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        arguments = call.get("arguments", call.get("parameters", {}))
        if isinstance(arguments, str):
            text = arguments
        elif isinstance(arguments, dict):
            text = json.dumps(arguments, ensure_ascii=False)
        else:
            return None
        index = len(self.calls)
        return ParsedCall(index, call_id(self._id_seed, index), call["name"], text)
